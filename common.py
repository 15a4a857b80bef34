"""
Small shared helpers used by every stage script: the command line and its checks, one-line
errors, atomic file writes, output-folder locks, threads, hashes and provenance. Nothing here
knows about models or data.

Config convention (nanoGPT-style): each script keeps a dict of commented defaults at the top
(one key per line; the comment beside a key says what it means), optional presets, and calls
parse_config(), which applies the defaults, then `--preset NAME` (and `NAME/VARIANT` where the
script has variants, e.g. train.py's `tiny/finetune`), then every `--key=value` / `--key value` /
`--flag` from the command line. The default's type is enforced, unknown keys are rejected, and
every value is checked against the script's `checks` here, in one place, before any work starts.
`-h` / `--help` prints what the script does and each key with the value the chosen preset will
use and the comment beside it in the script.
"""
import contextlib
import difflib
import errno
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class UserError(SystemExit):
    """A problem the user can fix. common.cli() prints it as one line `error: ...` on stderr and
    exits with status 2 (uncaught elsewhere, Python prints the same line and exits with 1)."""

    def __init__(self, msg):
        super().__init__(f"error: {msg}")
        self.msg = msg


def die(msg):
    raise UserError(msg)


DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def cli(main):
    """Run a script's main() as a command: a UserError becomes one line on stderr and exit status 2,
    a full or read-only disk one line naming the path, Ctrl-C one line and status 130."""
    try:
        main()
    except UserError as e:
        print(f"error: {e.msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; finished files are kept, re-run (with --resume where the script has it) "
              "to continue", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror}; free some disk space or choose a "
              f"writable --out_dir / --data_dir", file=sys.stderr)
        sys.exit(2)


# -----------------------------------------------------------------------------
# config / command line

def _convert(key, text, default):
    """Turn the command-line string `text` into the type of `default`."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        die(f"--{key} takes true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            try:  # "2e8" for an integer count is fine when it is whole
                f = float(text)
                if f.is_integer():
                    return int(f)
            except (ValueError, OverflowError):
                pass
            die(f"--{key} takes an integer, got {text!r}")
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            die(f"--{key} takes a number, got {text!r}")
    if isinstance(default, (list, tuple)):
        # comma separated; element type from the first default element (str if empty)
        proto = default[0] if len(default) else ""
        items = [s for s in text.split(",") if s != ""]
        return type(default)(_convert(key, s, proto) for s in items)
    return text  # str or None default: keep the string


_RULE = re.compile(r"^\s*(?:(>=|>|<=|<)\s*(\S+)|([\[(])\s*([^,]+),\s*([^\])]+)([\])]))\s*$")


def check_value(key, value, rule):
    """One-line error unless `value` satisfies `rule`: '>0', '>=0', '<=1', '[0,1]', '(0,1]', ... (bounds;
    numbers are always required to be finite) or a tuple of allowed values. Lists: every element."""
    if isinstance(value, (list, tuple)):
        for v in value:
            check_value(key, v, rule)
        return
    if isinstance(rule, (tuple, list, set, frozenset)):
        if value not in rule:
            die(f"--{key} must be one of {', '.join(map(str, rule))}; got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        die(f"--{key} must be a finite number, got {value}")
    if rule is None:
        return
    m = _RULE.match(rule)
    if m is None:
        raise ValueError(f"bad check rule {rule!r} for {key}")  # a programming error, not the user's
    if m.group(1):
        op, bound = m.group(1), float(m.group(2))
        ok = {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
        want = f"{op} {m.group(2)}"
    else:
        lo, hi = float(m.group(4)), float(m.group(5))
        ok = (value > lo if m.group(3) == "(" else value >= lo) and (value < hi if m.group(6) == ")" else value <= hi)
        want = f"in {m.group(3)}{m.group(4).strip()}, {m.group(5).strip()}{m.group(6)}"
    if not ok:
        die(f"--{key} must be {want}, got {value}")


def config_comments(path):
    """{key: comment} from the `config = dict(...)` / `config = {...}` block of a script's source: the
    comment beside a key (shared by the keys of one line), plus comment-only lines right below it."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return {}
    out, inside, last = {}, False, []
    for line in lines:
        if not inside:
            inside = re.match(r"^config\s*=\s*(dict\(|\{)", line) is not None
            continue
        if re.match(r"^[)}]", line):
            break
        if line.strip().startswith("#"):       # a comment-only line continues the previous key's comment
            for k in last:
                out[k] = (out.get(k, "") + " " + line.strip().lstrip("#").strip()).strip()
            continue
        code, _, comment = line.partition("  # ")
        keys = re.findall(r'(?:^|,)\s*"?([A-Za-z_]\w*)"?\s*(?:=(?!=)|:)', code)
        if keys:
            last = keys
            for k in keys:
                out[k] = comment.strip()
    return out


def _print_help(config, presets, chosen, script_doc, script_path):
    name = os.path.basename(script_path or sys.argv[0])
    doc = (script_doc or "").strip().split("\n\n")[0].strip()
    if doc:
        print(doc + "\n")
    print(f"usage: python {name} [--preset {'|'.join(p for p in presets if '/' not in p)}] [--key=value ...]"
          if presets else f"usage: python {name} [--key=value ...]")
    if chosen:
        print(f"values below: preset {chosen}")
    notes = config_comments(script_path) if script_path else {}
    width = max((len(f"--{k}={_show(v)}") for k, v in config.items() if k != "preset"), default=0)
    for k, v in config.items():
        if k == "preset":
            continue
        flag = f"--{k}={_show(v)}"
        print(f"  {flag:{min(width, 36)}s}  {notes.get(k, '')}".rstrip())
    raise SystemExit(0)


def parse_config(config, argv=None, presets=None, preset_default=None, checks=None, variant=None):
    """Apply presets and command-line overrides to `config` (a dict, modified in place); check them.

    presets: {name: {key: value}} applied before the command line; with `variant`, a function of
    the config (defaults + command line) returning e.g. 'finetune', presets[f'{name}/{variant}'] is
    applied after presets[name]. preset_default: the preset when none is given. checks: {key: rule}
    (see check_value). Returns the config; config['preset'] holds the preset that was used."""
    caller = sys._getframe(1).f_globals
    argv = sys.argv[1:] if argv is None else list(argv)
    pairs, want_help, i = [], False, 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
            i += 1
            continue
        if not arg.startswith("--") or arg == "--":
            die(f"unexpected argument {arg!r}; use --key=value (python {os.path.basename(sys.argv[0])} --help lists the keys)")
        body = arg[2:]
        if "=" in body:
            key, val = body.split("=", 1)
        else:
            key = body
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--") and nxt != "-h":
                val = nxt
                i += 1
            else:
                val = None  # bare flag
        pairs.append((key.replace("-", "_"), val))
        i += 1

    preset = preset_default
    cli_pairs = []
    for key, val in pairs:
        if key == "preset":
            preset = val
        else:
            cli_pairs.append((key, val))
    converted = {}
    for key, val in cli_pairs:
        if key not in config:
            close = difflib.get_close_matches(key, list(config), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            die(f"unknown option --{key}{hint}; python {os.path.basename(sys.argv[0])} --help lists them")
        default = config[key]
        if val is None:
            if not isinstance(default, bool):
                die(f"--{key} needs a value")
            converted[key] = True
        else:
            converted[key] = _convert(key, val, default)
    chosen = None
    if presets is not None:
        if preset is None:
            die("no preset given; use --preset " + "|".join(p for p in presets if "/" not in p))
        if preset not in presets or "/" in preset:
            die(f"unknown preset {preset!r}; choose one of: {', '.join(p for p in presets if '/' not in p)}")
        layers = [preset]
        if variant is not None:
            v = variant({**config, **converted})
            if v and f"{preset}/{v}" in presets:
                layers.append(f"{preset}/{v}")
        for name in layers:
            for k, v in presets[name].items():
                if k not in config:
                    raise KeyError(f"preset {name} sets unknown key {k}")  # programming error
                config[k] = v
        chosen = layers[-1]
        config["preset"] = preset
    config.update(converted)
    if want_help:
        _print_help(config, presets or {}, chosen if presets else None, caller.get("__doc__"), caller.get("__file__"))
    for key, value in config.items():
        check_value(key, value, (checks or {}).get(key))
    return config


def require_positive(cfg, keys):
    """One-line errors for settings that must be > 0 (a zero batch size or interval would fail deep inside)."""
    for k in keys:
        check_value(k, cfg[k], ">0")


# settings added after runs were saved, with the value those runs had: `fast` (fast.py) was the only
# code before the setting existed
ADDED_SETTINGS = {"fast": True}


def check_resume(saved, cfg, free, path):
    """`--resume` continues a run only with the settings it was started with (`free`: keys that may differ,
    such as logging intervals or the device); a finished run is checked too, so a changed setting is
    never silently ignored. saved: the config stored in the checkpoint (a setting it predates: the
    value of ADDED_SETTINGS)."""
    saved = {**ADDED_SETTINGS, **saved}
    changed = [f"--{k} {saved.get(k)!r} -> {cfg[k]!r}" for k in cfg if k not in free and saved.get(k) != cfg[k]]
    if changed:
        die(f"--resume of {path} with other settings ({'; '.join(changed)}); use the original ones, "
            f"or --overwrite to start over")


def _show(v):
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return v


# -----------------------------------------------------------------------------
# threads: torch's default of one per core is the slowest choice on a shared machine

def free_cores(sample_s=0.1):
    """Cores not busy with other work, from two reads of /proc/stat `sample_s` apart (this process is
    idle meanwhile). All of them where /proc/stat is missing."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait, total
    try:
        i0, t0 = read()
        time.sleep(sample_s)
        i1, t1 = read()
    except (OSError, ValueError, IndexError):
        return cores
    idle = (i1 - i0) / max(t1 - t0, 1)
    return max(1, min(cores, int(cores * idle + 0.5)))


def set_threads(n=0, device="cpu"):
    """torch's CPU threads: n > 0 as given, 0 = the cores that are free now (at least 1). Returns the count.
    A run on another device (a GPU) keeps torch's own count and returns it."""
    if device != "cpu":
        import torch
        return torch.get_num_threads()
    n = n if n > 0 else free_cores()
    try:
        import torch
    except ImportError:  # data.py runs without torch (its tokenizer and token files need none)
        return n
    torch.set_num_threads(n)
    return n


def cuda_possible(device="auto"):
    """Whether the stages will run on a CUDA GPU (--device `device`); a CPU-only torch build (`+cpu` in
    its version) says no without importing torch (~4 s on a small CPU)."""
    if device != "auto":
        return device.startswith("cuda")
    from importlib import metadata
    try:
        if "+cpu" in metadata.version("torch"):
            return False
    except metadata.PackageNotFoundError:
        return False
    import torch
    return torch.cuda.is_available()


def stage_jobs(jobs="auto", device="auto", threads=0):
    """reproduce.sh's plan for stages that do not depend on each other: (how many run at once, CPU
    threads for each). auto: 2 on a CPU with free cores for both, else 1 (a GPU's stages take it one at a time).
    Two 1-thread stages side by side beat two 2-thread stages one after the other on 2 cores (two SAE
    stages: 100 vs 159 s; two fine-tunes: ~30 vs 40 s): a stage's Python, its serial parts and the
    cost of threads leave a second core idle for a quarter to a third of the time. threads > 0: the
    user's --threads, kept (auto then runs two at once only where 2 x threads cores are free)."""
    free = free_cores()
    n = int(jobs) if jobs != "auto" else 2 if free >= 2 * max(threads, 1) and not cuda_possible(device) else 1
    return n, threads if threads > 0 else max(1, free // n)


# -----------------------------------------------------------------------------
# output folders: one run at a time, writable, with room for what the run will write

@contextlib.contextmanager
def lock_dir(path, what="this run"):
    """Hold `<path>/.lock` (pid, host, command) while the block runs, so two runs never write one
    folder at once. A live holder: one-line error naming it; a lock left by a dead process is taken
    over. Stale temp files of interrupted atomic writes (`.*.tmp`) in the folder are removed."""
    check_writable(path)
    lock = os.path.join(path, ".lock")
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(lock, encoding="utf-8") as f:
                    old_text = f.read()
                holder = json.loads(old_text)
            except (OSError, ValueError):
                old_text, holder = None, {}
            if holder and _alive(holder):
                die(f"{path} is in use by {what} in process {holder['pid']} ({holder.get('command', '?')}, since "
                    f"{holder.get('since', '?')}); wait for it to finish, or delete {lock} if that process is gone")
            if old_text is None and time.time() - _mtime(lock) < 5:  # being written right now
                time.sleep(0.2)
                continue
            print(f"taking over the stale lock {lock} of process {holder.get('pid', '?')} (no longer running)")
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    else:
        die(f"could not take the lock {lock}; delete it if no other run uses {path}")
    for name in os.listdir(path):
        if name.startswith(".") and name.endswith(".tmp"):  # an atomic write that never finished
            with contextlib.suppress(OSError):
                os.remove(os.path.join(path, name))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(lock, encoding="utf-8") as f:
                if f.read() == mine:
                    os.remove(lock)


def _alive(holder):
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, so it holds the lock
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def _mtime(path):
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def check_writable(path):
    """Create `path` if needed and write a probe file there, or fail now in one line (not after the work)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as e:
        die(f"cannot write in {path} ({e.strerror}); choose a writable folder (--out_dir / --data_dir)")


def check_free_space(path, need_bytes, what):
    """One-line error when the disk holding `path` has less than need_bytes free."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = _disk_free(probe)
    if free < need_bytes:
        die(f"{what} needs about {need_bytes / 1e6:,.0f} MB in {path}, but only {free / 1e6:,.0f} MB are free; "
            f"free some space or choose another folder")


def _disk_free(path):
    import shutil
    return shutil.disk_usage(path).free


# -----------------------------------------------------------------------------
# atomic writes: temp file in the same folder, then os.replace, so an interrupted run
# never leaves a half-written file under the final name

def atomic_write(path, write):
    """Call write(f) on a temp file beside path, fsync, then os.replace it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:
        die(f"cannot write {path} ({e.strerror}); choose a writable folder")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp makes 0600 files; give the usual permissions instead
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        # a full disk shows up as OSError, or from torch.save as a RuntimeError ("unexpected pos")
        if (isinstance(e, OSError) and e.errno in DISK_ERRNOS) or \
                (isinstance(e, RuntimeError) and _disk_free(folder) < (64 << 20)):
            die(f"cannot write {path}: the disk is full or not writable ({e}); the previous version of the "
                f"file (if any) is kept; free some space and re-run")
        raise


def atomic_write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):  # numpy / torch scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def atomic_torch_save(obj, path):
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -----------------------------------------------------------------------------
# hashes and provenance

def sha256_file(path, n=16):
    """First n hex digits of the SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def sha256_bytes(data, n=16):
    return hashlib.sha256(data).hexdigest()[:n]


_CODE_VERSION = None


def code_version():
    """Which code produced an output: the git commit (+ dirty flag) and a hash of the *.py sources."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        for name in sorted(os.listdir(HERE)):
            if name.endswith(".py"):
                with open(os.path.join(HERE, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
        commit, dirty = None, None
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                                    text=True, timeout=5).stdout.strip() or None
            if commit:
                dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                                            capture_output=True, text=True, timeout=5).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = {"git_commit": commit, "git_dirty": dirty, "source_sha256": h.hexdigest()[:16]}
    return dict(_CODE_VERSION)


def provenance(config, **extra):
    """The block every output carries: config, code version, and whatever inputs (hashes) the caller adds."""
    import platform
    import time
    out = {"config": dict(config), "code": code_version(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version()}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        pass
    out.update(extra)
    return out


def pick_device(pref="auto"):
    import torch
    if pref != "auto":
        if pref.startswith("cuda") and not torch.cuda.is_available():
            die(f"--device {pref} asked for, but torch sees no CUDA GPU; use --device cpu")
        return pref
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def peak_gpu_mib(device):
    """The most GPU memory torch has held in this process so far, MiB (None off CUDA): every stage's metrics
    record it, and reproduce.sh's table shows it."""
    import torch
    if not str(device).startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)


def default_preset():
    """'paper' on a CUDA machine, 'tiny' otherwise (printed by the caller). Without torch (data.py alone
    runs without it) there is no CUDA either."""
    try:
        import torch
    except ImportError:
        return "tiny"
    return "paper" if torch.cuda.is_available() else "tiny"
