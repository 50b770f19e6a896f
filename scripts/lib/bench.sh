# Shared by the benchmark scripts (sourced, not run): building the server, stopping what a script
# started, and reading CPU time the same way in every comparison.

# Builds pricebeast --release in repository `$1` and prints the binary's path.
build_pricebeast() {
    local root="$1" target_dir
    echo "== building pricebeast --release" >&2
    (cd "$root" && cargo build --release --bin pricebeast) >&2
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
    echo "$target_dir/release/pricebeast"
}

# The pricebeast binary a benchmark runs, printed: `$2` when given (made absolute; exit 2 when it
# is not an executable file), else this checkout `$1` built --release.
pricebeast_binary() {
    local root="$1" given="${2:-}" path
    if [ -z "$given" ]; then
        build_pricebeast "$root"
        return
    fi
    if [ ! -f "$given" ] || [ ! -x "$given" ]; then
        echo "not an executable file: $given" >&2
        exit 2
    fi
    path="$(cd "$(dirname "$given")" && pwd)/$(basename "$given")"
    echo "== using $path ($("$path" --version 2>/dev/null || echo "no version"))" >&2
    echo "$path"
}

# Stops a process: SIGTERM (pricebeast drains), then SIGKILL after 5 s.
stop() {
    local pid="$1"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# "utime+stime utime" of processes or threads, given their /proc/PID/stat or
# /proc/PID/task/TID/stat files, in clock ticks (fields 14 and 15, counted after the parenthesised
# command name, which may hold spaces). A process's line covers all its threads. User time alone
# says how much of a request is the server's own code, not the kernel's.
cpu_ticks() {
    local total=0 user=0 file line rest fields
    for file in "$@"; do
        line="$(cat "$file")"
        rest="${line##*) }"
        read -r -a fields <<<"$rest"
        # rest starts at field 3 (state): utime is field 14, stime 15.
        total=$((total + fields[11] + fields[12]))
        user=$((user + fields[11]))
    done
    echo "$total $user"
}

# The median of the numbers on standard input, one per line.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
