#!/usr/bin/env python3
"""Checks a built filter's imports: only `env.proxy_*` functions and `wasi_snapshot_preview1`
functions that Envoy provides. An import the host lacks makes the VM fail to load in Envoy, so
this catches it at build time and names it. Standard library only.

usage: wasm_imports.py FILE.wasm   (exit 0: allowed; 1: a disallowed import; 2: not a wasm module)
"""
import sys

WASI = "wasi_snapshot_preview1"
# What Envoy 1.40.0 (V8) links, found by loading modules importing each preview1 function:
# all of them except proc_raise. Most file and socket calls are stubs there.
WASI_ALLOWED = {
    "args_get", "args_sizes_get", "clock_res_get", "clock_time_get", "environ_get",
    "environ_sizes_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
    "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
    "fd_filestat_set_times", "fd_pread", "fd_prestat_dir_name", "fd_prestat_get", "fd_pwrite",
    "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
    "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "random_get", "sched_yield", "sock_accept",
    "sock_recv", "sock_send", "sock_shutdown",
}
KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise ValueError("truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def uleb(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def name(self):
        n = self.uleb()
        if self.pos + n > self.end:
            raise ValueError("truncated name")
        self.pos += n
        return self.data[self.pos - n:self.pos].decode("utf-8")

    def limits(self):
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()


def imports(data):
    """Yields (module, name, kind) for every import of a wasm binary."""
    if data[:4] != b"\0asm" or data[4:8] != b"\1\0\0\0":
        raise ValueError("not a wasm module (bad magic or version)")
    r = Reader(data, 8)
    while r.pos < r.end:
        section, size = r.byte(), r.uleb()
        if section != 2:
            r.pos += size
            continue
        s = Reader(data, r.pos, r.pos + size)
        for _ in range(s.uleb()):
            module, name, kind = s.name(), s.name(), s.byte()
            if kind == 0 or kind == 4:  # function / tag: a type index (tag: attribute first)
                if kind == 4:
                    s.byte()
                s.uleb()
            elif kind == 1:  # table: reftype, limits
                s.byte()
                s.limits()
            elif kind == 2:  # memory: limits
                s.limits()
            elif kind == 3:  # global: valtype, mutability
                s.byte()
                s.byte()
            else:
                raise ValueError(f"unknown import kind {kind}")
            yield module, name, KINDS.get(kind, str(kind))
        return


def allowed(module, name, kind):
    if kind != "func":
        return False
    return (module == "env" and name.startswith("proxy_")) or (module == WASI and name in WASI_ALLOWED)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], "rb") as f:
            found = list(imports(f.read()))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        print(f"{sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    bad = [i for i in found if not allowed(*i)]
    proxy = sum(1 for m, n, _ in found if m == "env" and n.startswith("proxy_"))
    wasi = sorted(n for m, n, _ in found if m == WASI)
    print(f"{len(found)} imports: {proxy} env.proxy_*, {len(wasi)} WASI ({', '.join(wasi) or 'none'})")
    for module, name, kind in bad:
        print(f"DISALLOWED import: {module}.{name} ({kind})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
