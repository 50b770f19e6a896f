#!/usr/bin/env bash
# Checks that Cargo.toml's rust-version is the true minimum the locked dependencies set: not
# below any locked package's own rust-version (the build would need a newer toolchain than it
# says), and not above the highest of them (it would refuse toolchains that build it). std APIs
# newer than rust-version are clippy's incompatible_msrv lint, denied in Cargo.toml's [lints].
#
#   scripts/check-msrv.sh      # prints the highest dependency and its rust-version
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --locked --format-version 1 | python3 -c '
import json, sys

def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
ours = next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])
if not ours.get("rust_version"):
    sys.exit("Cargo.toml has no rust-version")
declared = version(ours["rust_version"])
deps = [(version(p["rust_version"]), p["name"], p["version"], p["rust_version"])
        for p in meta["packages"] if p["id"] not in meta["workspace_members"] and p.get("rust_version")]
deps.sort(reverse=True)
top = deps[0]
above = [d for d in deps if d[0] > declared]
print(f"rust-version {ours['"'"'rust_version'"'"']}; highest locked dependency: {top[1]} {top[2]} needs {top[3]}")
if above:
    for d in above:
        print(f"  {d[1]} {d[2]} needs rust {d[3]}, above rust-version {ours['"'"'rust_version'"'"']}")
    sys.exit("rust-version is below what the locked dependencies need: raise it to " + top[3])
if declared > top[0]:
    sys.exit(f"rust-version {ours['"'"'rust_version'"'"']} is above every dependency'"'"'s (highest {top[3]}): lower it, unless the code itself needs it (incompatible_msrv says)")
'

# The lint that holds the code itself to rust-version must stay on.
if ! grep -Eq '^incompatible_msrv *= *"(deny|warn)"' Cargo.toml; then
  echo "Cargo.toml [lints.clippy] must keep incompatible_msrv on" >&2
  exit 1
fi
