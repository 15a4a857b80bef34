"""
Small shared helpers used by every stage script: command-line config, one-line errors,
atomic file writes, hashes and provenance. Nothing here knows about models or data.

Config convention (nanoGPT-style): each script keeps a dict of commented defaults at the top,
optional per-preset overrides, and calls parse_config(), which applies `--preset NAME` first
and then every `--key=value` / `--key value` / `--flag` from the command line, with the
type of the default enforced and unknown keys rejected.
"""
import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


class UserError(SystemExit):
    """A problem the user can fix. Printed as one line, exit status 2, no traceback."""

    def __init__(self, msg):
        super().__init__(f"error: {msg}")
        self.msg = msg


def die(msg):
    raise UserError(msg)


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
            except ValueError:
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


def parse_config(config, argv=None, presets=None, preset_default=None):
    """Apply `--preset` and command-line overrides to `config` (a dict, modified in place).

    presets: {name: {key: value}} applied before the command line.
    preset_default: the preset to use when none is given (e.g. 'paper' on CUDA, 'tiny' otherwise).
    Returns the config dict; config['preset'] holds the preset that was used.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    pairs = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            die(f"unexpected argument {arg!r}; use --key=value (python {os.path.basename(sys.argv[0])} --help lists the keys)")
        body = arg[2:]
        if body in ("help", "h"):
            print("options (default):")
            for k, v in config.items():
                print(f"  --{k}={_show(v)}")
            if presets:
                print("presets: " + ", ".join(presets))
            raise SystemExit(0)
        if "=" in body:
            key, val = body.split("=", 1)
        else:
            key = body
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                val = nxt
                i += 1
            else:
                val = None  # bare flag
        pairs.append((key.replace("-", "_"), val))
        i += 1

    preset = preset_default
    rest = []
    for key, val in pairs:
        if key == "preset":
            preset = val
        else:
            rest.append((key, val))
    if presets is not None:
        if preset is None:
            die("no preset given; use --preset " + "|".join(presets))
        if preset not in presets:
            die(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
        for k, v in presets[preset].items():
            if k not in config:
                raise KeyError(f"preset {preset} sets unknown key {k}")  # programming error
            config[k] = v
        config["preset"] = preset

    for key, val in rest:
        if key not in config:
            close = difflib.get_close_matches(key, list(config), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            die(f"unknown option --{key}{hint}; python {os.path.basename(sys.argv[0])} --help lists them")
        default = config[key]
        if val is None:
            if isinstance(default, bool):
                config[key] = True
                continue
            die(f"--{key} needs a value")
        config[key] = _convert(key, val, default)
    return config


def require_positive(cfg, keys):
    """One-line errors for settings that must be > 0 (a zero batch size or interval would fail deep inside)."""
    for k in keys:
        if not cfg[k] > 0:
            die(f"--{k} must be > 0, got {cfg[k]}")


def _show(v):
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return v


# -----------------------------------------------------------------------------
# atomic writes: temp file in the same folder, then os.replace, so an interrupted run
# never leaves a half-written file under the final name

def atomic_write(path, write):
    """Call write(f) on a temp file beside path, fsync, then os.replace it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp makes 0600 files; give the usual permissions instead
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
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


def default_preset():
    """'paper' on a CUDA machine, 'tiny' otherwise (printed by the caller)."""
    import torch
    return "paper" if torch.cuda.is_available() else "tiny"
