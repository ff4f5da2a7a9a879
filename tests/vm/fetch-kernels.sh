#!/usr/bin/env bash
# Fetches the Debian kernels of the VM matrix into a cache and extracts them.
#
#   tests/vm/fetch-kernels.sh [-c CACHE_DIR] [LABEL...]
#
# LABELs: 6.1 (bookworm's linux-image-amd64), 6.12 (bookworm-security's
# linux-image-6.12-amd64), sid (unstable's linux-image-amd64). Default: all.
# For every kernel it prints one line "LABEL RELEASE DIR" on stdout, where DIR
# holds vmlinuz and lib/modules/RELEASE. Progress goes to stderr.
#
# Unstable is read through a private sources file, lists dir and cache dir, so
# the system's apt state is never touched. Its mirror is taken from the
# system's own apt configuration (only the suite becomes sid): no mirror name
# is written here. Downloads and extractions are reused across runs; when the
# sid index cannot be refreshed, the last kernel fetched from it is reused.
set -euo pipefail

cache=build/vm-cache
if [ "${1:-}" = -c ]; then cache=${2:?-c needs a directory}; shift 2; fi
labels=("$@")
[ ${#labels[@]} -gt 0 ] || labels=(6.1 6.12 sid)
mkdir -p "$cache/debs" "$cache/kernels"
cache=$(cd "$cache" && pwd)

say() { echo "fetch-kernels: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v apt-get >/dev/null || die "apt-get not found (this script needs Debian's apt)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# Prints "URI SIGNED-BY" of the first deb source carrying the system's own
# release suite (not -security/-updates), from one-line or deb822 files.
system_mirror() {
	local codename f
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || return 1
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v cn="$codename" '
			$1 == "deb" {
				i = 2; sb = ""
				if ($2 ~ /^\[/) {
					while (i <= NF) {
						if ($i ~ /^\[?signed-by=/) { sb = $i; sub(/^\[?signed-by=/, "", sb); sub(/\]$/, "", sb) }
						if ($i ~ /\]$/) { i++; break }
						i++
					}
				}
				if ($(i + 1) == cn) { print $i, (sb == "" ? "-" : sb); exit }
			}' "$f"
	done | head -n1 | grep . && return 0
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822: stanzas separated by blank lines; fields may repeat per stanza
		awk -v cn="$codename" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " cn " ") && uri != "" && enabled != "no")
					{ print uri, (sb == "" ? "-" : sb); found = 1; exit }
				types = suites = uri = sb = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "") }
			key == "types" { types = $0 }
			key == "suites" { suites = $0 }
			key == "uris" { split($0, u, " "); uri = u[1] }
			key == "signed-by" { sb = $0 }
			key == "enabled" { enabled = tolower($0) }
			END { if (!found) flush() }' "$f"
	done | head -n1 | grep .
}

# apt options for the private unstable view
sid_dir=$cache/apt-sid
sid_opts=(-o "Dir::Etc::SourceList=$sid_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$sid_dir/lists" -o "Dir::Cache=$sid_dir/cache"
	-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
	-o APT::Get::List-Cleanup=0)

sid_update() {
	local line uri sb
	line=$(system_mirror) || die "no Debian mirror found in /etc/apt/sources.list{,.d/} to derive unstable's from"
	read -r uri sb <<<"$line"
	[ "$sb" != - ] || sb=/usr/share/keyrings/debian-archive-keyring.gpg
	mkdir -p "$sid_dir/lists/partial" "$sid_dir/cache/archives/partial"
	echo "deb [signed-by=$sb] $uri sid main" >"$sid_dir/sources.list"
	say "refreshing the private unstable index ($uri, suite sid)"
	apt-get "${sid_opts[@]}" -qq update >&2
}

# apt-cache/apt-get with or without the private sid view
apt_for() { if [ "$1" = sid ]; then echo "${sid_opts[@]}"; fi; }

# Resolves a metapackage to the versioned package it depends on, matching RE.
resolve_dep() {
	local label=$1 meta=$2 re=$3 opts
	read -r -a opts <<<"$(apt_for "$label")"
	apt-cache "${opts[@]}" depends "$meta" 2>/dev/null |
		awk -v re="$re" '$1 == "Depends:" && $2 ~ re { print $2; exit }'
}

debs=()
download() {  # label pkg... -> appends the .deb paths to debs[]
	local label=$1 opts pkg f
	shift
	read -r -a opts <<<"$(apt_for "$label")"
	for pkg in "$@"; do
		local want
		want=$(apt-cache "${opts[@]}" policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
		[ -n "$want" ] && [ "$want" != "(none)" ] || die "$label: package $pkg not found in apt's index"
		local enc=${want//:/%3a}
		f=$cache/debs/${pkg}_${enc}_amd64.deb
		if [ ! -s "$f" ]; then
			say "$label: downloading $pkg $want"
			(cd "$cache/debs" && apt-get "${opts[@]}" -qq download "$pkg" 2>&1 |
				grep -v 'unsandboxed as root' >&2) || true
			[ -s "$f" ] || die "$label: apt-get download $pkg ($want) failed"
		fi
		debs+=("$f")
	done
}

# Extracts debs into kernels/RELEASE and points kernels/LABEL at it.
extract() {
	local label=$1 release=$2
	shift 2
	local dir=$cache/kernels/$release stamp
	# a new Debian revision of the same ABI must be unpacked again
	stamp=$(for d in "$@"; do basename "$d"; done)
	if [ ! -e "$dir/.done" ] || [ "$(cat "$dir/.done")" != "$stamp" ]; then
		rm -rf "$dir" && mkdir -p "$dir"
		local deb
		for deb in "$@"; do dpkg-deb -x "$deb" "$dir"; done
		local img
		# bookworm: /boot/vmlinuz-RELEASE; unstable: usr/lib/modules/RELEASE/vmlinuz
		img=$(ls "$dir/boot/vmlinuz-$release" "$dir/usr/lib/modules/$release/vmlinuz" 2>/dev/null |
			head -n1 || true)
		[ -n "$img" ] || die "$label: no vmlinuz for $release in $*"
		ln -sf "${img#"$dir"/}" "$dir/vmlinuz"
		# bookworm ships modules under /lib, unstable under /usr/lib
		if [ ! -d "$dir/lib/modules/$release" ] && [ -d "$dir/usr/lib/modules/$release" ]; then
			mkdir -p "$dir/lib/modules"
			ln -s "../../usr/lib/modules/$release" "$dir/lib/modules/$release"
		fi
		[ -d "$dir/lib/modules/$release/kernel" ] || die "$label: no modules for $release in $*"
		if [ ! -e "$dir/lib/modules/$release/modules.dep" ]; then
			# unstable ships neither modules.dep nor modules.order/builtin: the
			# warnings about the latter are expected
			depmod -b "$dir" "$release" 2> >(grep -v 'could not open modules\.' >&2) ||
				die "$label: depmod failed for $release"
		fi
		echo "$release" >"$dir/release"
		echo "$stamp" >"$dir/.done"
	fi
	ln -sfn "$release" "$cache/kernels/$label"
	echo "$label $release $dir"
}

fetch_one() {
	local label=$1 pkg release
	debs=()
	case $label in
	6.1)
		pkg=$(resolve_dep "$label" linux-image-amd64 '^linux-image-6\.1\.') ||
			true
		[ -n "$pkg" ] || die "6.1: linux-image-amd64 does not resolve to a linux-image-6.1.* package (is this Debian 12 and apt's index current? try apt-get update)"
		release=${pkg#linux-image-}
		download "$label" "$pkg"
		;;
	6.12)
		pkg=$(resolve_dep "$label" linux-image-6.12-amd64 '^linux-image-6\.12') || true
		[ -n "$pkg" ] || die "6.12: linux-image-6.12-amd64 not found (is bookworm-security in apt's sources and its index current? try apt-get update)"
		release=${pkg#linux-image-}
		download "$label" "$pkg"
		;;
	sid)
		if ! sid_update; then
			if [ -e "$cache/kernels/sid/.done" ]; then
				say "sid: index refresh failed, reusing $(cat "$cache/kernels/sid/release")"
				echo "sid $(cat "$cache/kernels/sid/release") $cache/kernels/$(cat "$cache/kernels/sid/release")"
				return 0
			fi
			die "sid: cannot refresh the unstable index and nothing is cached"
		fi
		pkg=$(resolve_dep sid linux-image-amd64 '^linux-image-[0-9]') || true
		[ -n "$pkg" ] || die "sid: linux-image-amd64 in unstable does not resolve to a versioned image"
		release=${pkg#linux-image-}
		# in unstable the image package is a metapackage: the binary and the
		# modules are separate packages; older layouts ship them in the image
		local parts=("$pkg") extra
		for extra in "linux-binary-$release" "linux-modules-$release"; do
			if apt-cache "${sid_opts[@]}" show "$extra" >/dev/null 2>&1; then parts+=("$extra"); fi
		done
		download sid "${parts[@]}"
		;;
	*) die "unknown kernel label '$label' (known: 6.1 6.12 sid)" ;;
	esac
	[ ${#debs[@]} -gt 0 ] || die "$label: nothing downloaded for $pkg"
	extract "$label" "$release" "${debs[@]}"
}

for l in "${labels[@]}"; do fetch_one "$l"; done
