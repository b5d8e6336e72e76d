#!/usr/bin/python3
"""Checks docker/Dockerfile against the real build, without a Docker engine.

1. Every shared library the built binaries load (ldd) belongs to a Debian
   package (dpkg -S) that the runtime stage installs, and no -dev package is
   installed there.
2. The builder stage runs the same setup and build commands as CI: the
   `bash scripts/...` lines of scripts/test.sh (which .ci/run runs), in order.
3. The runtime stage copies both binaries from the builder's build tree,
   runs as a non-root user, exposes 50051, binds 0.0.0.0:50051 explicitly and
   has a HEALTHCHECK running `layerctl health`; docker/compose.yaml maps the
   port. Both stages are debian:bookworm.

usage: docker_check.py REPO_ROOT BINARY...
Prints one line per problem and exits 1 if there is any.
"""

import os
import re
import shlex
import subprocess
import sys


def logical_lines(text):
    """Dockerfile lines with continuations joined and comments dropped."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def parse_stages(text):
    """[(base_image, name, [(INSTRUCTION, args)])] in file order."""
    stages = []
    for line in logical_lines(text):
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" \
                else ""
            stages.append((words[0], name, []))
        elif stages:
            stages[-1][2].append((instr, args.strip()))
    return stages


def script_commands(shell_text):
    """`bash scripts/X.sh ARGS` commands of a shell script or RUN line."""
    cmds = []
    for part in re.split(r"&&|;|\n", shell_text):
        words = part.strip().split()
        if len(words) >= 2 and words[0] == "bash" and \
                words[1].startswith("scripts/"):
            cmds.append(" ".join(words))
    return cmds


def apt_packages(run_args):
    """Packages named by `apt-get install` in a RUN command."""
    pkgs = []
    for part in re.split(r"&&|;", run_args):
        words = shlex.split(part)
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1:]
            pkgs += [w for w in after if not w.startswith("-")]
    return pkgs


def candidates(path):
    """`path` as dpkg may know it: itself, its target, with/without /usr."""
    real = os.path.realpath(path)
    out = [path, real]
    for p in (path, real):
        out.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    return out


def owning_packages(paths):
    """{path: package} for every path dpkg knows, in one dpkg -S call."""
    r = subprocess.run(["dpkg", "-S"] + sorted(set(paths)),
                       capture_output=True, text=True)
    owners = {}
    for line in r.stdout.splitlines():
        # "pkg:arch: /path" or "pkg1, pkg2: /path"; skip "diversion by" lines.
        if ": /" not in line or line.startswith("diversion"):
            continue
        pkgs, path = line.rsplit(": ", 1)
        owners[path] = pkgs.split(",")[0].strip().split(":")[0]
    return owners


def main():
    repo, binaries = sys.argv[1], sys.argv[2:]
    problems = []
    with open(os.path.join(repo, "docker/Dockerfile")) as f:
        stages = parse_stages(f.read())
    if len(stages) < 2:
        print("docker/Dockerfile: expected a builder and a runtime stage")
        return 1
    (b_base, b_name, builder), (r_base, _, runtime) = stages[0], stages[-1]
    for base, which in ((b_base, "builder"), (r_base, "runtime")):
        if base != "debian:bookworm":
            problems.append(f"{which} stage is FROM {base}, "
                            "expected debian:bookworm")

    # 1. Runtime libraries.
    installed = []
    for instr, args in runtime:
        if instr == "RUN":
            installed += apt_packages(args)
    for p in installed:
        if p.endswith("-dev"):
            problems.append(f"runtime stage installs the -dev package {p}")
    libs = set()
    for binary in binaries:
        r = subprocess.run(["ldd", binary], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"ldd {binary} failed: {r.stderr.strip()}")
            continue
        for line in r.stdout.splitlines():
            if "not found" in line:
                problems.append(f"{binary}: {line.strip()}")
                continue
            m = re.search(r"=>\s+(/\S+)", line) or \
                re.match(r"\s*(/\S+)\s+\(", line)
            if m:  # else linux-vdso, which is no file
                libs.add(m.group(1))
    owners = owning_packages(c for lib in libs for c in candidates(lib))
    needed = {}
    for lib in sorted(libs):
        pkg = next((owners[c] for c in candidates(lib) if c in owners), None)
        if pkg is None:
            problems.append(f"no Debian package ships {lib}")
        else:
            needed.setdefault(pkg, set()).add(os.path.basename(lib))
    for pkg, libs in sorted(needed.items()):
        if pkg not in installed:
            problems.append(f"runtime stage does not install {pkg}, which "
                            f"provides {', '.join(sorted(libs))}")

    # 2. The builder runs CI's commands.
    with open(os.path.join(repo, ".ci/run")) as f:
        if "scripts/test.sh" not in f.read():
            problems.append(".ci/run does not run scripts/test.sh")
    with open(os.path.join(repo, "scripts/test.sh")) as f:
        ci_cmds = script_commands(f.read())
    builder_cmds = []
    for instr, args in builder:
        if instr == "RUN":
            builder_cmds += script_commands(args)
    if not ci_cmds:
        problems.append("scripts/test.sh runs no `bash scripts/...` command")
    if builder_cmds != ci_cmds:
        problems.append(f"builder stage runs {builder_cmds}, CI runs "
                        f"{ci_cmds} (scripts/test.sh)")
    if not any(c.startswith("bash scripts/install-deps.sh") for c in ci_cmds):
        problems.append("CI does not run scripts/install-deps.sh")
    if not any(c.startswith("bash scripts/build.sh") for c in ci_cmds):
        problems.append("CI does not run scripts/build.sh")

    # 3. The runtime stage's shape.
    build_dir = "build"
    for c in builder_cmds:
        words = c.split()
        if words[1] == "scripts/build.sh" and len(words) > 2:
            build_dir = words[2]
    workdir = "/"
    for instr, args in builder:
        if instr == "WORKDIR":
            workdir = args
    copies = " ".join(a for i, a in runtime if i == "COPY")
    for rel in ("server/layerserve", "client/layerctl"):
        src = os.path.join(workdir, build_dir, rel)
        if f"--from={b_name} {src} " not in copies + " ":
            problems.append(f"runtime stage does not COPY --from={b_name} "
                            f"{src}")
    users = [a for i, a in runtime if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("runtime stage does not switch to a non-root USER")
    if not any(i == "EXPOSE" and "50051" in a.split() for i, a in runtime):
        problems.append("runtime stage does not EXPOSE 50051")
    cmd = " ".join(a for i, a in runtime if i in ("CMD", "ENTRYPOINT"))
    if "--address=0.0.0.0:50051" not in cmd:
        problems.append("runtime CMD does not pass --address=0.0.0.0:50051")
    health = [a for i, a in runtime if i == "HEALTHCHECK"]
    if not health or not re.search(r'"layerctl",\s*"health"|layerctl health',
                                   health[-1]):
        problems.append("runtime stage has no HEALTHCHECK running "
                        "`layerctl health`")
    with open(os.path.join(repo, "docker/compose.yaml")) as f:
        if not re.search(r"ports:\s*\n\s*-\s*\"?[0-9.:]*50051:50051",
                         f.read()):
            problems.append("docker/compose.yaml maps no port to 50051")

    for p in problems:
        print(f"docker_check: {p}")
    print(f"docker_check: {len(needed)} runtime packages needed by "
          f"{len(binaries)} binaries; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
