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
import stat
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


# A package missing from the environment is one line naming its install, not an import traceback.
# Every script imports common before numpy, torch and the rest, so this hook is set before their imports.
INSTALLS = {"torch": "install PyTorch (CPU: pip install torch==2.13.0; a GPU: the CUDA build for your machine, >= 2.5)",
            "numpy": "pip install numpy tiktoken requests (or -r requirements-hf.txt beside a CUDA torch)",
            "pyarrow": "pip install -r requirements-hf.txt", "tokenizers": "pip install -r requirements-authors.txt",
            "pytest": "pip install -r requirements-dev.txt", "transformers": "pip install -r requirements-bench.txt"}
INSTALLS["tiktoken"] = INSTALLS["requests"] = INSTALLS["numpy"]


def _missing_module_hook(kind, err, tb):
    name = (getattr(err, "name", None) or "").split(".")[0]
    if issubclass(kind, ModuleNotFoundError) and name:
        print(f"error: no module named '{name}': {INSTALLS.get(name, f'pip install {name}')}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, err, tb)


sys.excepthook = _missing_module_hook

# The oldest torch these scripts run on: every torch file is read with torch.serialization.safe_globals
# (model.load_checkpoint), new in 2.5. The tests pass on 2.5.1, 2.11.0 and 2.13.0 and fail on 2.4.1, where
# a stage would stop halfway and call a good file damaged; so model.py and fast.py check first.
TORCH_FLOOR = (2, 5)


def check_torch(version):
    """One line naming the install where torch `version` (torch.__version__) is older than TORCH_FLOOR."""
    m = re.match(r"(\d+)\.(\d+)", str(version))
    if m and (int(m[1]), int(m[2])) < TORCH_FLOOR:
        die(f"torch {version} is older than {'.'.join(map(str, TORCH_FLOOR))}, the oldest these scripts run on; "
            + INSTALLS["torch"])


def watch_driver():
    """A stage started by reproduce.sh (REPRODUCE_PID and REPRODUCE_START in its environment: the driver's pid
    and its start time, see proc_start) ends when the driver is gone, however it went (kill -9 included): it
    sends itself SIGTERM, as the driver's own trap would. Two ways, for robustness: on Linux the kernel's
    PR_SET_PDEATHSIG (at once, but only where the driver is the stage's direct parent), and everywhere a
    thread that checks every second that the driver's pid still runs and is the same process (a reused pid
    has another start time). Atomic writes and resumes make a stage safe to end at any moment."""
    import signal
    import threading
    try:
        pid, start = int(os.environ["REPRODUCE_PID"]), os.environ.get("REPRODUCE_START") or None
    except (KeyError, ValueError):
        return

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        try:  # killed but not yet reaped by its parent (a zombie: state Z) is gone too
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            return fields[0] == b"Z" or (start is not None and fields[19].decode() != start)
        except (OSError, IndexError):
            return False  # no /proc (not Linux): the pid alone says

    if os.getppid() == pid and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG

    def poll():
        while not gone():
            time.sleep(1.0)
        with contextlib.suppress(Exception):  # stderr may be a pipe whose reader (the driver's tagger) is gone
            print(f"error: reproduce.sh (process {pid}) is gone; stopping this stage too (re-run to resume)",
                  file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)
    if gone():  # the driver ended before this stage got here
        poll()
    threading.Thread(target=poll, daemon=True, name="watch-driver").start()


DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def out_of_memory(e):
    """Whether an exception is the machine running out of memory: numpy's MemoryError, torch's OutOfMemoryError
    and its CPU allocator's failures (RuntimeErrors)."""
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and bool(
        re.search(r"out of memory|can't allocate|not enough memory", str(e))))


def output_closed():
    """Whether the reader of our standard output has gone (`python train.py -h | head`): a pipe whose read
    end is closed polls as an error."""
    import select
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno (a test's capture), no poll (Windows)
        return False


def one_line(text):
    """text with its control characters written as escapes (a newline as \\n, ESC as \\x1b): a message quotes
    names read from files and records, and a newline there would break its one line, a terminal escape
    sequence rewrite the screen."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", lambda m: repr(m.group(0))[1:-1], text)


def cli(main):
    """Run a script's main() as a command: a UserError becomes one line on stderr and exit status 2,
    a full or read-only disk one line naming the path, Ctrl-C one line and status 130, a closed pipe nothing."""
    try:
        main()
    except UserError as e:
        print(f"error: {one_line(keep_settings(e.msg))}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, OverflowError, RuntimeError) as e:
        # sizes too large for the machine (each setting's range cannot know its memory): torch's OutOfMemoryError
        # and CPU allocator failures are RuntimeErrors, numpy's a MemoryError, a size past int64 an overflow
        text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if isinstance(e, RuntimeError) and not (out_of_memory(e) or re.search(r"[Oo]verflow", text)):
            raise
        if isinstance(e, OverflowError):  # Python's: a number past a float or an index, not memory running out
            print(f"error: a number too large to hold ({text[:160]}): a file read holds a value no stage writes "
                  f"(damaged or hand-edited: remake it with the stage that writes it), or a setting is too large "
                  f"(lower it)", file=sys.stderr)
            sys.exit(2)
        print(f"error: out of memory or past what a size can hold ({text[:160]}); the settings ask for more than "
              f"this machine holds: lower the sizes (batch, width, expansion, tokens) or use a larger device",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; finished files are kept, re-run (with --resume where the script has it) "
              "to continue", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        if not output_closed():
            raise  # another pipe's (a child's, a socket's)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail
        sys.exit(1)
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror}; free some disk space or choose a "
              f"writable --out_dir / --data_dir", file=sys.stderr)
        sys.exit(2)


# -----------------------------------------------------------------------------
# config / command line

# the folder and preset settings given on this command line (and those a script lacks, from the study's records:
# keep_study_settings): every fix a message prints as a command keeps them (keep_settings), so that, copied as
# printed, it works on the user's folders, not on the defaults
GIVEN = {}
# every key set on this command line (not by a default or a preset): a setting that means nothing for this
# run is refused when the user chose it and only noted when a preset did (sae.py's resample_every)
COMMAND_LINE = set()
SCRIPT_KEYS = {"data.py": ("data_dir", "preset"), "report.py": ("out_dir",),
               **{f"{s}.py": ("data_dir", "out_dir", "preset") for s in ("train", "sae", "merge", "analyze", "authors",
                                                                           "diffing")}}


def keep_settings(msg, given=None):
    """msg with each `python <script>.py` command in it given the GIVEN settings (or `given`'s) that script takes
    and the command does not name already (placed right after the script's name)."""
    import shlex
    given = GIVEN if given is None else given

    def add(m):
        rest = re.split(r";|\bpython \w+\.py\b", msg[m.end():])[0]  # this command's words: up to the next
        keys = [k for k in SCRIPT_KEYS.get(m.group(1), ()) if k in given and f"--{k}" not in rest]
        return m.group(0) + "".join(f" --{k}={shlex.quote(str(given[k]))}" for k in keys)
    return re.sub(r"python (\w+\.py)\b", add, msg)


def keep_study_settings(out_dir, keys):
    """GIVEN completed with `keys`, settings this script does not take (report.py: --data_dir and --preset), as
    the study in out_dir was made with: its records' provenance (a stage's small record first, then the
    analysis'). Without them report.py's fixes (python analyze.py, python sae.py ...) would read data/ and
    the machine's default preset, not the study's. A record that cannot be read is passed over (its reader
    names it)."""
    try:
        names = [os.path.join(d, f) for d in sorted(os.listdir(out_dir)) for f in ("metrics.json", "merge.json")]
    except OSError:  # no out_dir: the caller names it
        return
    for name in names + [os.path.join("analysis", f"{k}.json") for k in ("results", "pages")]:
        try:
            got = recorded_settings(read_json(os.path.join(out_dir, name))["provenance"]["config"], keys)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if got:
            GIVEN.update({k: v for k, v in got.items() if k not in GIVEN})
            return


def recorded_settings(made, keys):
    """{key: value} of the settings `keys` (folders, preset: text) that `made`, the config a stage's record says
    it ran with, gives as non-empty strings. AttributeError when `made` is not a dict."""
    return {k: made[k] for k in keys if isinstance(made.get(k), str) and made[k].strip()}


def with_settings(cmd, made, defaults, presets, free, variant=None):
    """cmd, the command that remakes a stage's file, with ` --key value` for each setting of `made` (the config
    the file records it was made with) that differs from what cmd would use: the script's `defaults` after the
    made preset of `presets` (and of its `variant`, train.py's); the preset itself where cmd would run another.
    Left out: keys cmd names, keys in `free` (the script's RESUME_FREE: they change nothing made), fast (the same
    results to rounding), and values of another type than the default's (hand-made). made not a dict or empty
    (nothing recorded): cmd."""
    import shlex
    if not isinstance(made, dict) or not made:
        return cmd
    made = {**ADDED_SETTINGS, **made}  # (settings it predates: the value they had then)
    named = {w[2:].split("=")[0] for w in cmd.split() if w.startswith("--")}
    base, preset, flags = dict(defaults), made.get("preset"), ""
    if isinstance(preset, str) and preset in presets:
        base.update(presets[preset])
        if variant is not None:
            base.update(presets.get(f"{preset}/{variant({**defaults, **made})}", {}))
        if preset != GIVEN.get("preset", default_preset()) and "preset" not in named:
            flags += f" --preset {shlex.quote(preset)}"
    for k, d in base.items():
        v = made.get(k, d)
        if k in named or k in free or k in ("fast", "preset") or v == d or not (
                type(v) is type(d) or (type(d) is float and type(v) is int)):
            continue
        flags += f" --{k} {shlex.quote(str(v).lower() if isinstance(v, bool) else str(_show(v)))}"
    return cmd + flags


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
    if isinstance(value, int) and abs(value) > 2 ** 53:  # no count or size here means anything past this
        die(f"--{key} {value} is too large to mean anything here (at most 2**53)")
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
    comment beside a key (shared by the keys of one line), plus the comment-only lines right below it
    indented past the key (one at the key's own indent heads the next keys: "# system")."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return {}
    out, inside, last, indent = {}, False, [], 0
    for line in lines:
        if not inside:
            inside = re.match(r"^config\s*=\s*(dict\(|\{)", line) is not None
            continue
        if re.match(r"^[)}]", line):
            break
        if line.strip().startswith("#"):
            if len(line) - len(line.lstrip()) > indent:  # continues the previous key's comment
                for k in last:
                    out[k] = (out.get(k, "") + " " + line.strip().lstrip("#").strip()).strip()
            else:
                last = []
            continue
        code, _, comment = line.partition("  # ")
        keys = re.findall(r'(?:^|,)\s*"?([A-Za-z_]\w*)"?\s*(?:=(?!=)|:)', code)
        if keys:
            last, indent = keys, len(line) - len(line.lstrip())
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


def split_argv(argv):
    """The command line -> ([(key, value or None for a bare flag)], whether --help was asked); keys with
    - as _. --key=value, --key value and a bare --flag are accepted; anything else is one line."""
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
    return pairs, want_help


def parse_config(config, argv=None, presets=None, preset_default=None, checks=None, variant=None):
    """Apply presets and command-line overrides to `config` (a dict, modified in place); check them.

    presets: {name: {key: value}} applied before the command line; with `variant`, a function of
    the config (defaults + command line) returning e.g. 'finetune', presets[f'{name}/{variant}'] is
    applied after presets[name]. preset_default: the preset when none is given. checks: {key: rule}
    (see check_value). Returns the config; config['preset'] holds the preset that was used."""
    caller = sys._getframe(1).f_globals
    pairs, want_help = split_argv(sys.argv[1:] if argv is None else list(argv))

    preset = preset_default
    cli_pairs = []
    GIVEN.clear()
    GIVEN.update({k: v for k, v in pairs if k in ("data_dir", "out_dir", "preset") and v is not None})
    for key, val in pairs:
        if key == "preset":
            preset = val
        else:
            cli_pairs.append((key, val))
    if presets is None and any(k == "preset" for k, _ in pairs):  # never ignored in silence
        die(f"python {os.path.basename(sys.argv[0])} has no presets (the stage scripts have them); drop --preset")
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
    COMMAND_LINE.clear()
    COMMAND_LINE.update(converted)
    for key, value in config.items():  # (before --help too: reproduce.sh checks its extra settings so)
        check_value(key, value, (checks or {}).get(key))
        if key in ("data_dir", "out_dir") and isinstance(value, str) and not value.strip():  # the current folder
            die(f"--{key} is empty (the current folder); give a folder, e.g. --{key}={key[:-4]}")
    if want_help:
        _print_help(config, presets or {}, chosen if presets else None, caller.get("__doc__"), caller.get("__file__"))
    # one folder for both would put the models beside the token files of the same names (out/base/ckpt.pt in
    # data/base/), where a stage could overwrite or lock another's files (one inside the other is fine:
    # lock_dir leaves a folder another run holds alone)
    if "data_dir" in config and "out_dir" in config and \
            os.path.realpath(config["data_dir"]) == os.path.realpath(config["out_dir"]):
        die(f"--data_dir and --out_dir are both {config['out_dir']}; give each its own folder")
    return config


def check_seeds(seeds):
    """--seeds: at least one, each once (0,0 would train one SAE: no null baseline)."""
    if not seeds or len(set(seeds)) < len(seeds):
        die(f"--seeds {','.join(map(str, seeds))}: give each seed once, e.g. --seeds 0,1")


def check_resume_or_overwrite(cfg):
    """--resume and --overwrite together contradict each other (keep the run / throw it away): refused, never one of
    them chosen in silence (--overwrite used to win, and a finished model or SAE, with all it fed, was lost)."""
    if cfg.get("resume") and cfg.get("overwrite"):
        die("--resume continues the run on disk and --overwrite starts it over; give one of them, not both")


def require_positive(cfg, keys):
    """One-line errors for settings that must be > 0 (a zero batch size or interval would fail deep inside)."""
    for k in keys:
        check_value(k, cfg[k], ">0")


# settings added after runs were saved, with the value those runs had: `fast` (fast.py) was the only
# code before the setting existed; sae.py's `mix` was equal shares; train.py's `sampler` random windows
ADDED_SETTINGS = {"fast": True, "mix": "equal", "sampler": "windows"}


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


def gpu_count(device="auto"):
    """The GPUs that stages side by side share out, one each: every CUDA GPU torch sees where --device is auto
    or cuda; none where it names one (cuda:N) or the stages run on a CPU."""
    if device not in ("auto", "cuda") or not cuda_possible(device):
        return 0
    import torch
    return torch.cuda.device_count()


def stage_jobs(jobs="auto", device="auto", threads=0):
    """reproduce.sh's plan for stages that do not depend on each other: (how many run at once, CPU
    threads for each, GPUs to share out). auto: on a CPU 2 with free cores for both, else 1; on GPUs one
    stage per GPU (a stage keeps its GPU busy alone). Two 1-thread stages side by side beat two 2-thread
    stages one after the other on 2 cores (two SAE stages: 100 vs 159 s; two fine-tunes: ~30 vs 40 s): a
    stage's Python, its serial parts and the cost of threads leave a second core idle for a quarter to a
    third of the time. threads > 0: the user's --threads, kept (auto then runs two at once only where
    2 x threads cores are free). GPUs > 1: reproduce.sh gives each stage the GPU with the fewest stages
    on it (CUDA_VISIBLE_DEVICES): on four, the four SAE stages can run at once."""
    free, gpus = free_cores(), gpu_count(device)
    if jobs != "auto":
        n = int(jobs)
    elif cuda_possible(device):
        n = max(1, gpus)
    else:
        n = 2 if free >= 2 * max(threads, 1) else 1
    return n, threads if threads > 0 else max(1, free // n), gpus


# -----------------------------------------------------------------------------
# output folders: one run at a time, writable, with room for what the run will write

# folders under out_dir that belong to a stage other than a model's: sae.py's, analyze.py's, explain.py's cache,
# diffing.py's
STAGE_FOLDERS = ("sae_", "analysis", "explain_cache", "diffing")


def check_model_folder(flag, name, hint=""):
    """A model's folder (train.py --name, merge.py --out) is a plain name under --out_dir, never another
    stage's folder or a path: else one line."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.startswith(STAGE_FOLDERS):
        die(f"{flag} {name!r} must be a plain folder name under --out_dir, not another stage's folder (sae_*, "
            f"analysis, diffing) or a path{hint}")


@contextlib.contextmanager
def lock_dir(path, what="this run", subfolders=False):
    """Hold `<path>/.lock` (pid, its start time, host, command) while the block runs, so two runs never
    write one folder at once. A live holder: one-line error naming it; a lock left by a dead process,
    or by a pid that now belongs to another process (started later than the lock's: the pid was
    reused), is taken over. A .lock that is no lock file (a folder, other JSON, text) is one line: it is
    left for the user to look at, not deleted. Stale temp files of interrupted atomic writes (`.*.tmp`)
    in the folder are removed, and in its subfolders with `subfolders` (data.py: the writer of every file
    under data_dir; a folder under out_dir may belong to another stage running now, so not there). Folders
    made here and still empty at the end (a run refused after taking the lock) are removed."""
    made, p = [], os.path.abspath(path)  # the folders made here (--out_dir too, where it is new), deepest first
    while not os.path.isdir(p):
        made.append(p)
        p = os.path.dirname(p)
    check_writable(path)
    lock = os.path.join(path, ".lock")
    mine = json.dumps({"pid": os.getpid(), "start": proc_start(os.getpid()), "host": socket.gethostname(),
                       "command": " ".join(sys.argv), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            old_text = None
            if os.path.lexists(lock) and not os.path.isfile(lock):
                die(f"{lock} is a folder or special file, not a lock file; remove it (rm -r {lock}) if no run uses {path}")
            try:
                with open(lock, "rb") as f:
                    old_text = f.read().decode("utf-8", "replace").strip() or None  # empty: being written
                holder = json.loads(old_text or "{}")
            except (OSError, ValueError):
                holder = {}
            if old_text is not None and not (isinstance(holder, dict) and type(holder.get("pid")) is int
                                             and holder["pid"] > 0):  # kill(0 or -1) would signal a group
                die(f"{lock} is not a lock file of these scripts (it holds {old_text[:40]!r}); delete it if no "
                    f"run uses {path}")
            if holder and _alive(holder):
                die(f"{path} is in use by {what} in process {holder['pid']} ({holder.get('command', '?')}, since "
                    f"{holder.get('since', '?')}); wait for it to finish, or delete {lock} if that process is gone")
            if old_text is None and time.time() - _mtime(lock) < 5:  # being written right now
                time.sleep(0.2)
                continue
            print(f"taking over the stale lock {lock} of process {holder.get('pid', '?')} (no longer running; its pid "
                  f"may belong to another process now)")
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    else:
        die(f"could not take the lock {lock}; delete it if no other run uses {path}")
    for folder, subs, names in os.walk(path):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):  # an atomic write that never finished
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
        if not subfolders:
            break
        # a subfolder with a lock of its own is another run's (an out_dir inside data_dir): not ours to clean
        subs[:] = [s for s in subs if not os.path.lexists(os.path.join(folder, s, ".lock"))]
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(lock, encoding="utf-8") as f:
                if f.read() == mine:
                    os.remove(lock)
        for p in made:
            with contextlib.suppress(OSError):
                os.rmdir(p)  # only when empty


def _alive(holder):
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, so it holds the lock
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    # the pid is taken: by the holder, or (pids are reused) by a process started after it; a lock written
    # before start times were recorded cannot tell, so it holds
    start = proc_start(int(holder["pid"]))
    return holder.get("start") is None or start is None or start == holder["start"]


def proc_start(pid):
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22, which stays the same
    for the life of a process, unlike its pid); None where there is no /proc (not Linux) or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])  # after the name, which may hold spaces and ')'
    except (OSError, ValueError, IndexError):
        return None


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


def device_free_bytes(device):
    """Free memory on the device: CUDA's free memory, or the machine's available memory for the CPU (None
    where /proc/meminfo cannot tell)."""
    if str(device).startswith("cuda"):
        import torch
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_free_memory(need_bytes, device, what, fix):
    """One-line error, before the work, when `what` needs more than the device's free memory: past it a CPU
    run is killed by the kernel without a word (and may take the machine's other work with it)."""
    free = device_free_bytes(device)
    if free is not None and need_bytes > free:
        die(f"{what} needs at least {need_bytes / 2 ** 30:,.1f} GB of {device} memory, more than the "
            f"{free / 2 ** 30:,.1f} GB free; {fix}")


def _disk_free(path):
    import shutil
    return shutil.disk_usage(path).free


# -----------------------------------------------------------------------------
# atomic writes: temp file in the same folder, then os.replace, so an interrupted run
# never leaves a half-written file under the final name

def check_outputs(*paths):
    """One line, before any work where a stage calls it, when a file it will write has a folder (or a
    device, a pipe) in its place: os.replace cannot put a file there (a link it replaces, even a dangling one)."""
    for p in paths:
        if os.path.lexists(p) and not os.path.islink(p) and not os.path.isfile(p):
            die(f"{p} is not a file but a folder, a device or a pipe, where this run writes a file; move it away "
                f"and re-run")


def atomic_write(path, write):
    """Call write(f) on a temp file beside path, fsync, then os.replace it into place."""
    path = os.fspath(path)
    check_outputs(path)
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


def check_regular(path):
    """Raise OSError (ENOENT where path is missing) unless path is a regular file: a folder, a device
    (/dev/zero would be read without end) or a pipe (its open would wait for a writer) in its place is
    refused before it is opened."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a folder, a device or a pipe)", path)


def read_json(path):
    """A JSON file's contents. A file nested past what the parser's recursion holds (200,000 `[`: hostile) raises
    ValueError, as invalid JSON does: every reader's damaged-file path catches OSError and ValueError."""
    check_regular(path)
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deeply to read") from None


# -----------------------------------------------------------------------------
# what a file is and whether it is whole: every checkpoint and record a stage writes says its kind and
# format and carries a checksum of its contents (JSON records since format 2), and every reader checks them
# (check_file) before it uses a file. A file without a kind (written before FORMAT 1) is taken for the kind its reader
# wants when it has that kind's fields (KINDS), so runs made before kinds existed still load; it has no
# checksum to verify (nothing it holds can run all the same: torch files are loaded as data only).

FORMAT = 2  # 2: JSON records carry a checksum too
NUM = (int, float)
# kind: (what it is, in messages; the top-level fields its readers use, and their types). Most specific first:
# a file without a kind is described as the first kind whose fields it has (what_is)
KINDS = {"model": ("a model checkpoint", {"model": dict, "model_args": dict}),
         "sae": ("an SAE", {"sae": dict, "sae_args": dict}),
         "sae_state": ("an SAE training state", {"seeds": dict, "step": int, "history": list}),
         "sae_metrics": ("sae.py's metrics", {"seeds": dict, "history": list}),
         "merge": ("a merge record", {"made_from": dict, "t": NUM}),
         "sweep": ("a merge sweep", {"made_from": dict, "t": list, "loss": dict}),
         "results": ("analyze.py's results", {"edges": dict, "models": dict, "threshold": NUM, "token_set": dict,
                                              "provenance": dict}),
         "pages": ("analyze.py's feature pages", {"pages": dict, "tok": object}),
         "train_metrics": ("train.py's metrics", {"val_loss": dict}),
         "crosscoder": ("a crosscoder", {"crosscoder": dict, "crosscoder_args": dict}),    # diffing.py
         "crosscoder_state": ("a crosscoder training state", {"crosscoders": dict, "step": int}),  # diffing.py
         "diffing": ("diffing.py's results", {"edges": dict, "sae_hashes": dict, "provenance": dict})}
TORCH_KINDS = ("model", "sae", "sae_state", "crosscoder", "crosscoder_state")  # torch.save files (the rest: JSON)


def _not_numbers(d, keys):
    """Those of keys that the dict d holds with a value that is neither a number nor None."""
    return [k for k in keys if d.get(k) is not None and (type(d[k]) is bool or not isinstance(d[k], NUM))]


def _dicts_of_dicts(x):
    return isinstance(x, dict) and all(isinstance(v, dict) for v in x.values())


# the speed a stage measured (reproduce.sh's stage table reads them): numbers, or None where not measured
SPEED = ("tokens_per_s", "mfu", "peak_gpu_mib")
# a seed's held-out metrics in sae.py's metrics.json that report.py's SAE table formats as numbers
SAE_METRICS = ("fvu", "l0", "dead_frac", "dense_frac", "ce_clean", "ce_spliced", "ce_zero_ablation", "ce_recovered",
               "kl", "mse")


def _train_metrics_shape(m):
    if any(type(v) is bool or not isinstance(v, NUM) for v in m["val_loss"].values()):
        return "a val_loss that is not a number"
    hist = m.get("history") or []  # (none in records made before train.py kept a loss curve)
    if not isinstance(hist, list) or not all(isinstance(h, dict) and not _not_numbers(
            h, ("iter", "tokens", "train_loss", "val_loss", "lr")) for h in hist):
        return "a history that is not a list of loss points"
    return None


def _sae_metrics_shape(m):
    seeds = m["seeds"]
    if not _dicts_of_dicts(seeds) or any(_not_numbers(v, SAE_METRICS) or not isinstance(v.get(
            "checkpoint_sha256", ""), str) for v in seeds.values()):
        return "seeds that are not each seed's metrics"
    if not all(isinstance(h, dict) and not _not_numbers(h, ("act_per_s",)) and all(
            type(h.get("step")) is int and _dicts_of_dicts(h[k]) for k in ("train", "eval") if k in h)
               for h in m["history"]):
        return "a history that is not a list of logged steps"
    return None


def _merge_shape(m):
    ck = m.get("checkpoint") or {}  # (none in records made before merge.py kept its checkpoint's hash)
    if not isinstance(ck, dict) or not isinstance(ck.get("hash") or "", str):
        return "a checkpoint that is not the merge's checkpoint and its hash"
    val = m.get("val_loss") or {}  # (none without an evaluation)
    if not isinstance(val, dict) or _not_numbers(val, list(val)):
        return "a val_loss that is not a number"
    return None


def _speed_shape(m):
    bad = _not_numbers(m, SPEED)
    return f"a {bad[0]} that is not a number" if bad else None


# kind: why a record of that kind (its KINDS fields already checked) holds an inner value of another type than
# its writer gives it and its readers use (None when all are as written). One place per kind: check_file (every
# reader) and record_problem (a stage deciding whether its own record is current) both ask it
SHAPES = {"train_metrics": lambda m: _train_metrics_shape(m) or _speed_shape(m),
          "sae_metrics": lambda m: _sae_metrics_shape(m) or _speed_shape(m), "merge": _merge_shape}


def stamp(obj, kind):
    """The dict obj as a file of `kind`: kind and format first; a torch kind's values made plain data (what
    torch.load(weights_only=True) reads back: see _plain) and the checksum of it all last."""
    body = {k: v for k, v in obj.items() if k not in ("kind", "format", "checksum")}
    if kind not in TORCH_KINDS:  # as JSON reads it back (tuples as lists, numpy as numbers), then its checksum
        out = json.loads(json.dumps({"kind": kind, "format": FORMAT, **body}, default=_json_default))
        out["checksum"] = json_checksum(out)
        return out
    out = _plain({"kind": kind, "format": FORMAT, **body})
    out["checksum"] = checksum(out)
    return out


def _plain(o):
    """o with every value torch's weights_only unpickler would refuse turned into data: numpy scalars into
    numbers, arrays, dataclasses, namespaces and torch.Generators into tensors or dicts, str subclasses
    (torch.__version__) into str. Tensors are kept as they are (no copy)."""
    import dataclasses
    import types

    import torch
    if o is None or type(o) in (bool, int, float, str) or isinstance(o, torch.Tensor):
        return o
    if isinstance(o, dict):
        return {_plain(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return (list if isinstance(o, list) else tuple)(_plain(v) for v in o)
    for t in (int, float, str):  # subclasses: numpy.float64 (a float), torch.__version__ (a str)
        if isinstance(o, t):
            return t(o)
    if isinstance(o, torch.Generator):
        return o.get_state()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return _plain(dataclasses.asdict(o))
    if isinstance(o, types.SimpleNamespace):
        return _plain(vars(o))
    if hasattr(o, "dtype") and hasattr(o, "tolist"):  # numpy arrays and scalars
        return _plain(o.tolist()) if getattr(o, "ndim", 0) == 0 else torch.from_numpy(o.copy())
    if isinstance(o, (torch.dtype, torch.device)):
        return str(o)
    raise TypeError(f"a checkpoint cannot hold a {type(o).__name__}: convert it to tensors or plain values")


def checksum(obj):
    """sha256 (hex) of a file's contents: each tensor's dtype, shape and bytes, each other value's type and
    repr, containers with their lengths, in order; the top-level "checksum" field left out. Costs about
    what torch.save takes (DESIGN.md, Reliability)."""
    import torch
    h = hashlib.sha256()

    def walk(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(o.shape)}\0".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(o, dict):
            h.update(f"D{len(o)}\0".encode())
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, (list, tuple)):
            h.update(f"{'L' if isinstance(o, list) else 'U'}{len(o)}\0".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"{type(o).__name__}:{o!r}\0".encode())
    walk({k: v for k, v in obj.items() if k != "checksum"})
    return h.hexdigest()


def what_is(obj, want=None):
    """(kind, a few words saying what a loaded file holds): the kind it names; for a dict without one (the
    version before kinds), `want` if it has want's fields, else the first kind whose fields it has (kind
    None when none fits)."""
    if not isinstance(obj, dict):
        return None, "a bare tensor" if type(obj).__name__ == "Tensor" else f"a {type(obj).__name__}"
    if "kind" in obj:
        k = obj["kind"]
        return (k, KINDS[k][0]) if isinstance(k, str) and k in KINDS else (None, f"a file of unknown kind {k!r}")
    for k in [want] * (want in KINDS) + list(KINDS):
        if all(isinstance(obj.get(f), t) for f, t in KINDS[k][1].items()):
            return k, KINDS[k][0]
    return None, f"a dict of no known kind (fields: {', '.join(map(str, list(obj)[:6]))})"


def json_checksum(obj):
    """sha256 (hex) of a JSON record as json.dumps writes it, the top-level "checksum" field left out: a value
    edited or a digit flipped on disk no longer matches (a record read back dumps to the same text)."""
    body = {k: v for k, v in obj.items() if k != "checksum"}  # (ASCII escapes: a path's undecodable bytes too)
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()


def record_problem(obj, kind):
    """What a loaded file is instead of a whole `kind` file as its writer makes it, as the end of "<path> is
    ..." (None when it is one): its kind, that kind's fields (KINDS) and inner values (SHAPES). check_file's
    test, which a stage deciding whether its own record is current asks too (one the readers would refuse is
    then rewritten, never kept as current)."""
    words = KINDS[kind][0]
    got, what = what_is(obj, kind)
    if got != kind:
        return f"{what}, not {words}"
    fmt = obj.get("format", 0)  # before the checksum: a newer format may sum otherwise
    if type(fmt) is int and fmt > FORMAT:
        return f"{words} of format {fmt!r}, written by newer code (this code reads formats up to {FORMAT})"
    if type(fmt) is not int or fmt < 0:
        return f"{words} of format {fmt!r}, not one any version writes: damaged or hand-made"
    if kind not in TORCH_KINDS and "checksum" in obj and obj["checksum"] != json_checksum(obj):
        return "damaged: its contents do not match the checksum written with them"
    bad = [f for f, t in KINDS[kind][1].items() if not isinstance(obj.get(f), t)]
    if bad:
        return f"{words} without a valid {', '.join(bad)}: damaged or hand-made"
    if kind not in TORCH_KINDS and fmt >= 2 and "checksum" not in obj:  # every format-2 record is written with one
        return f"{words} of format {fmt} without the checksum written with it: damaged or hand-made"
    why = SHAPES[kind](obj) if kind in SHAPES else None
    return f"{words} with {why}: damaged or hand-made" if why else None


def made_as_now(rec, kind, cfg, how_only, inputs, same=None):
    """Whether a stage's loaded JSON record is what the stage would write now, so it has nothing to do: whole
    and of its kind (record_problem), made by this code (the sources' hash), with cfg's settings but how_only's
    (same(key, value, saved config): the stage's own test of a setting; else equal), and its provenance
    holding each of `inputs` (hashes of the files it reads) as they are now."""
    try:
        # (record_problem: a format-2 record without its checksum; an older format is not this code's)
        if record_problem(rec, kind) or rec.get("format") != FORMAT:
            return False
        prov = rec["provenance"]
        saved = prov.get("config") or {}
        same = same or (lambda k, v, saved: saved.get(k) == v)
        return (all(k in how_only or same(k, v, saved) for k, v in cfg.items())
                and (prov.get("code") or {}).get("source_sha256") == code_version()["source_sha256"]
                and all(prov.get(k) == v for k, v in inputs.items()))
    except (KeyError, AttributeError, TypeError):  # a record of another shape: not current
        return False


def check_file(obj, path, kind, how=None):
    """The one check a reader makes of a file it has loaded, before using it: it is a `kind` file with
    that kind's fields and inner values and (a JSON record with one) its checksum (record_problem), of a
    format this code reads, and (a torch kind written with a format) its contents match its checksum.
    Otherwise one line naming the file, what it is instead, and `how`: the command that remakes it where
    it is (with --overwrite where the script needs it). Returns obj."""
    fix = f"; remake it: {how}" if how else ""
    problem = record_problem(obj, kind)
    if problem:
        die(f"{path} is {problem}{fix}")
    if kind in TORCH_KINDS and obj.get("format", 0) >= 1 and obj.get("checksum") != checksum(obj):
        die(f"{path} is damaged: its contents do not match the checksum written with them{fix}")
    return obj


def read_record(path, kind, how=None):
    """A stage's JSON record (results, pages, metrics, merge record or sweep) after check_file; one line
    naming the file when it is missing, not JSON, or of another kind (how: as check_file's)."""
    fix = f"; remake it: {how}" if how else ""
    if not os.path.exists(path):
        die(f"no {path}" + (f"; make it: {how}" if how else ""))
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        die(f"{path} is not readable JSON ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}){fix}")
    return check_file(obj, path, kind, how)


def misfit(path, e, what, how):
    """One line for a file whose weights do not fit the `what` its own args describe (e: the error that
    building or loading them raised): whole by its checksum, but edited by hand (and re-stamped). Out of
    memory is the machine's, not the file's: raised again (cli names it), the file never called damaged."""
    if out_of_memory(e):
        raise e
    why = [x.strip() for x in str(e).splitlines()
           if x.strip() and not x.startswith("Error(s) in loading")]  # torch's heading line
    die(f"{path} does not fit the {what} it describes ({type(e).__name__}: {(why or [''])[0][:200]}):"
        f" damaged or hand-made; remake it: {how} --overwrite")


def check_adam_state(opt):
    """Raise ValueError where a loaded Adam state does not fit its parameters: load_state_dict compares no
    shapes, and a fused step would then write out of bounds (a crash, not an error)."""
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if k in ("exp_avg", "exp_avg_sq") and tuple(getattr(v, "shape", ())) != tuple(p.shape):
                    raise ValueError(f"the optimizer's {k} has shape {tuple(getattr(v, 'shape', ()))}, its "
                                     f"parameter {tuple(p.shape)}")


# -----------------------------------------------------------------------------
# hashes and provenance

def sha256_file(path, n=16):
    """First n hex digits of the SHA-256 of a file's bytes (streamed)."""
    check_regular(path)
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
    from importlib import metadata
    try:  # the installed version, without importing torch (data.py never needs it: ~200 MiB)
        out["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pass
    out.update(extra)
    return out


def pick_device(pref="auto"):
    """--device: auto, cpu, cuda or cuda:N of a GPU torch sees; anything else is one line (the stages are
    written for CPU and CUDA: mps lacks ops they use, meta has no data to compute on)."""
    import torch
    if pref != "auto":
        m = re.fullmatch(r"cuda(?::(\d+))?", pref)
        if pref != "cpu" and m is None:
            die(f"--device {pref!r} is not one these scripts run on; use --device auto, cpu, cuda or cuda:N")
        if m and not torch.cuda.is_available():
            die(f"--device {pref} asked for, but torch sees no CUDA GPU; use --device cpu")
        if m and m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            die(f"--device {pref}: torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0; use --device cuda")
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
    runs without it) there is no CUDA either; a CPU build says so without being imported (cuda_possible)."""
    return "paper" if cuda_possible() else "tiny"


watch_driver()  # last: it needs proc_start
