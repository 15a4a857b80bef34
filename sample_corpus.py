"""
sample_corpus.py: the built-in demo corpus of data.py's `--source sample` (the quickstart's data).

Smoke-scale stand-ins for the study's four domains, made on the spot, with no download:
  babylm      generated English prose (narrative, dialogue, encyclopedia entries, child-directed speech)
  tinystories generated children's stories (a character, a problem, a helper, a moral)
  lua         generated Lua modules (functions, loops, tables, a class)
  python      this interpreter's own standard library (.py files, spread over the library by hash)
Every generator is seeded (random.Random(f"{seed}-{domain}-{split}")), so the corpus is the same on
every run of the same Python version. It is a demo of the pipeline, not the study's data.
"""
import hashlib
import os
import platform
import random


def hash_frac(text):  # a deterministic number in [0, 1) per document: the split of undivided datasets
    return int(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8], 16) / 2 ** 32


def sample_docs(domain, sample_kb, val_frac, seed):
    """The built-in demo corpus of one domain: generated text (seeded) or, for Python, this
    interpreter's standard library. Returns (train documents, val documents, info)."""
    target = {"train": sample_kb * 1024, "val": int(sample_kb * 1024 * val_frac)}
    if domain == "python":
        return stdlib_docs(target, val_frac) + ({"python": platform.python_version()},)
    gen = {"babylm": gen_prose, "tinystories": gen_story, "lua": gen_lua}[domain]
    out = []
    for split in ("train", "val"):
        rng, docs, size = random.Random(f"{seed}-{domain}-{split}"), [], 0
        while size < target[split]:
            docs.append(gen(rng))
            size += len(docs[-1].encode())
        out.append(docs)
    return out[0], out[1], {}


def stdlib_docs(target, val_frac):
    root = os.path.dirname(os.__file__)
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("test", "tests", "idlelib", "site-packages", "__pycache__"))
        files += [os.path.relpath(os.path.join(d, n), root) for n in sorted(names) if n.endswith(".py")]
    docs, size = {"train": [], "val": []}, {"train": 0, "val": 0}
    for rel in sorted(files, key=lambda r: hashlib.sha256(r.encode()).hexdigest()):  # spread over the library
        split = "val" if hash_frac(rel) < val_frac else "train"
        if size[split] >= target[split]:
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read().strip("\n")
        if not text or len(text) > target["train"] / 16:  # no single file dominates
            continue
        docs[split].append(text)
        size[split] += len(text.encode())
    return docs["train"], docs["val"]


# --- generators for the sample. Word lists and templates written for this project.
NAMES = ("Anna Ben Clara David Elsa Felix Grace Henry Iris Jack Kate Leo Mia Noah Olive Peter Rosa Sam "
          "Tom Uma Victor Wendy Lily Max Zoe Oscar Ruby Hugo Nora Eli").split()
P_NOUN = ("house garden river city village forest window door letter book table kitchen morning evening "
           "winter summer road bridge market church school teacher doctor farmer soldier captain merchant "
           "king queen mother father brother sister friend neighbour stranger horse ship train station "
           "island mountain valley field lamp fire candle paper question answer story voice music picture "
           "journey storm harbour castle library office newspaper carriage servant painter sailor lawyer "
           "clock mirror staircase chimney orchard meadow cottage tower factory engine coast "
           "century language government history science argument promise secret memory silence").split()
P_ADJ = ("old young quiet bright dark small large heavy gentle strange silent careful curious narrow wide "
          "cold warm ancient distant familiar patient proud nervous wealthy poor grey golden crooked steep "
          "famous ordinary serious cheerful anxious weary elegant modest remarkable peculiar").split()
P_ADV = ("slowly quickly quietly suddenly carefully gently softly eagerly finally rarely almost perhaps "
          "certainly scarcely presently immediately").split()
P_VT = ("see:saw take:took find:found hold:held bring:brought build:built read:read write:wrote "
         "leave:left keep:kept open close watch carry follow remember answer visit describe examine "
         "notice mend paint sell:sold buy:bought forget:forgot").split()
P_VI = ("walk sleep:slept laugh smile wait arrive listen sing:sang travel return rest hurry hesitate "
         "whisper tremble wander disappear").split()
P_PREP = "across near behind beside under beyond through toward along inside".split()
P_CONJ = "because although when while after before until since".split()
P_PLACE = "Ashford Brookmere Carrow Dunwick Elmstead Farrowdale Greyhaven Holloway Kestrel Lindmoor".split()


def plural(n):
    return n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "es" if n[-1] in "sxh" else n + "s"


def past(v):
    if ":" in v:
        return v.split(":")[1]
    return v + "d" if v.endswith("e") else v[:-1] + "ied" if v.endswith("y") and v[-2] not in "aeiou" else v + "ed"


def gen_prose(rng):
    """babylm-like: narrative prose, dialogue, an encyclopedia entry, or child-directed speech."""
    c = rng.choice
    def lc(s): return s if s.split()[0] in NAMES else s[0].lower() + s[1:]  # noqa: E704
    def np_(): return f"the {c(P_ADJ) + ' ' if rng.random() < 0.5 else ''}{c(P_NOUN)}"  # noqa: E704
    def clause():
        vt = rng.random() < 0.6
        s = f"{c(NAMES) if rng.random() < 0.4 else np_().capitalize()} {past(c(P_VT if vt else P_VI))}"
        s += f" {np_()}" if vt else ""
        s += f" {c(P_PREP)} {np_()}" if rng.random() < 0.4 else ""
        return f"{c(P_ADV).capitalize()}, {lc(s)}" if rng.random() < 0.25 else s
    mode = rng.random()
    if mode < 0.15:  # child-directed speech: one utterance a line, spaced punctuation
        return "\n".join(c([f"look at the {c(P_NOUN)} .", f"do you want the {c(P_NOUN)} ?", "yes .", "no .",
                             f"where did the {c(P_NOUN)} go ?", f"that 's a {c(P_ADJ)} {c(P_NOUN)} .",
                             "what is that ?", f"can you say {c(P_NOUN)} ?", f"{c(NAMES).lower()} , come here .",
                             "good job !"]) for _ in range(rng.randint(6, 20)))
    if mode < 0.3:  # an encyclopedia entry
        place, year = c(P_PLACE), rng.randint(1200, 1990)
        sents = [f"= = = {place} = = =", f"{place} is a {c(P_ADJ)} town near the {c(P_NOUN)} of {c(P_PLACE)}.",
                 f"It was founded in {year} and had {rng.randint(2, 90) * 1000} people in {rng.randint(1900, 2020)}.",
                 f"The town is known for its {plural(c(P_NOUN))} and its {c(P_ADJ)} {c(P_NOUN)}.",
                 f"In {year + rng.randint(5, 300)}, a {c(P_NOUN)} was built {c(P_PREP)} the {c(P_NOUN)}."]
        return "\n".join(sents[:rng.randint(3, 5)])
    sents = []
    for _ in range(rng.randint(3, 12)):
        r = rng.random()
        if r < 0.2:
            q = c([f"Where is {np_()}?", f"Have you seen {np_()}?", f"It is {c(P_ADJ)}, is it not?",
                   f"I {c(['shall', 'must', 'cannot'])} {c(P_VT).split(':')[0]} {np_()}.", f"Did you know that {lc(clause())}?"])
            sents.append(f'"{q}" {c(["said", "asked", "replied", "whispered", "cried"])} {c(NAMES)}.')
        elif r < 0.35:
            sents.append(f"{np_().capitalize()} was {c(P_ADJ)} and {c(P_ADJ)}, and {plural(c(P_NOUN))} lay {c(P_PREP)} it.")
        elif r < 0.6:
            sents.append(f"{clause()} {c(P_CONJ)} {lc(clause())}.")
        else:
            sents.append(clause() + c([".", ".", ".", f"; {lc(clause())}.", f", and then {c(NAMES)} {past(c(P_VI))}."]))
    return " ".join(sents)


S_KIND = "girl boy cat dog bunny bird bear frog duck puppy kitten mouse fox".split()
S_ADJ = "little happy small kind shy brave silly curious sleepy".split()
S_PLACE = "park garden forest house farm beach school pond".split()
S_ACT = ["play with a ball", "draw pictures", "dance", "sing songs", "run in the grass", "build with blocks",
         "look at the clouds", "jump in puddles", "help mom", "read books", "swim in the pond", "climb trees"]
S_OBJ = "ball kite toy hat car doll box cake flower shell balloon blanket cookie stick".split()
S_COL = "red blue big shiny green yellow pink soft tiny".split()
S_FEEL = "sad scared angry worried upset lonely".split()
S_MORAL = ["sharing is caring", "it is good to be kind", "you should always tell the truth",
           "friends help each other", "it is okay to ask for help", "being brave is good", "we should say sorry"]


def gen_story(rng):
    """tinystories-like: a character, a place, a problem, a helper, a happy end and a moral."""
    c = rng.choice
    name, kind, helper = c(NAMES), c(S_KIND), c(["mom", "dad", "a wise owl", "a kind old man", "grandma"] + NAMES)
    he = {"girl": "she", "boy": "he"}.get(kind) or c(["he", "she"])
    his = {"he": "his", "she": "her"}[he]
    obj = f"{c(S_COL)} {c(S_OBJ)}"
    place = c(S_PLACE)
    s = [c([f"Once upon a time, there was a {c(S_ADJ)} {kind} named {name}.",
            f"One day, a {c(S_ADJ)} {kind} named {name} went to the {place}.",
            f"There was a {kind} called {name}."]),
         f"{he.capitalize()} loved to {c(S_ACT)}."]
    if rng.random() < 0.6:
        s.append(f"{name} had a {obj}. {he.capitalize()} liked it very much.")
    s.append(c([f"One day, {name} lost {his} {obj} in the {place}.",
                f"But the {obj} got stuck in a big tree.",
                f"Then it started to rain, and {name} could not {c(S_ACT)}.",
                f"{name} saw a {c(S_KIND)} who was {c(S_FEEL)}.",
                f"{name} wanted the {obj}, but {his} friend {c(NAMES)} had it."]))
    s.append(f"{name} felt {c(S_FEEL)}. {c(['', 'Big tears came out. ', ''])}")
    s.append(f'{helper[0].upper() + helper[1:]} said, "{c(["Do not worry", "Let me help you", "We can do it together", "Be brave"])}, {name}!"')
    s.append(c([f"They looked and looked, and at last they found the {obj}.",
                f"{name} and {helper} played together all day.",
                f"{name} said sorry, and they shared the {obj}.", f"{name} was brave and it was fine."]))
    s.append(f"{name} was very {c(['happy', 'glad', 'proud'])}. {c(['They smiled.', 'They hugged.', ''])}")
    if rng.random() < 0.7:
        s.append(c([f"From that day on, {name} knew that {c(S_MORAL)}.",
                    f"The moral of the story is: {c(S_MORAL)}."]))
    return " ".join(x.strip() for x in s if x.strip()).replace("  ", " ")


L_VERB = ("get set make parse load save find build update check count split join format render read "
           "write push pop add remove merge sort filter map reduce encode decode validate resolve").split()
L_NOUN = ("name value item node list key path user config buffer token line entry index size table "
           "field record cache queue stack result options message header body chunk state event handler").split()
L_MOD = "json utils parser lexer queue config logger http socket path template cache router".split()


def gen_lua(rng):
    """Lua source: a module with functions, tables, loops, string ops, a class and comments."""
    c = rng.choice
    camel = rng.random() < 0.5
    def ident(k=2):
        parts = [c(L_VERB)] + [c(L_NOUN) for _ in range(k - 1)]
        return parts[0] + "".join(p.capitalize() for p in parts[1:]) if camel else "_".join(parts)
    mod = c(L_MOD)
    M = c(["M", "_M", mod.capitalize(), mod])
    out = [f"-- {mod}.lua: {c(['helpers for', 'a small library of', 'functions that handle'])} "
           f"{plural(c(L_NOUN))} and {plural(c(L_NOUN))}", f"local {M} = {{}}"]
    for dep in rng.sample(L_MOD, rng.randint(0, 3)):
        out.append(f'local {dep} = require("{dep}")')
    const = c(L_NOUN).upper()
    out += [f"local MAX_{const} = {rng.choice([8, 16, 64, 100, 256, 1024])}", ""]

    def expr(vs):
        a, b = c(vs), c(vs)
        return c([f"{a} + {b}", f"{a} * {rng.randint(2, 9)}", f"#{a}", f'"{c(L_NOUN)}" .. tostring({a})',
                  f"string.format(\"%s=%d\", {a}, {b})", f"{a}:upper()", f"{a}:sub(1, {rng.randint(2, 12)})",
                  f"math.max({a}, {b})", f"{a} or {{}}", f'{a}:gsub("%s+", "")', f"({a} - 1) % MAX_{const}",
                  f"{a}[{b}]", f"select('#', {a})", f"tonumber({a}) or 0"])

    def block(vs, depth, ind):
        lines = []
        for _ in range(rng.randint(2, 5)):
            r, pad = rng.random(), "  " * ind
            if r < 0.25 or depth == 0:
                v = c([c(L_NOUN), plural(c(L_NOUN)), c(L_NOUN) + c(["_count", "Len", "2"])])
                lines.append(f"{pad}local {v} = {expr(vs)}")
                vs = vs + [v]
            elif r < 0.4:
                lines += [f"{pad}for i = 1, #{c(vs)} do"] + block(vs + ["i"], depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.55:
                lines += [f"{pad}for k, v in {c(['pairs', 'ipairs'])}({c(vs)}) do"] + \
                         block(vs + ["k", "v"], depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.7:
                lines += [f"{pad}if {c(vs)} {c(['==', '~=', '>', '<='])} {c(['nil', '0', 'true', c(vs)])} then"] + \
                         block(vs, depth - 1, ind + 1)
                if rng.random() < 0.5:
                    lines += [f"{pad}else"] + block(vs, depth - 1, ind + 1)
                lines.append(f"{pad}end")
            elif r < 0.8:
                lines.append(f"{pad}table.insert({c(vs)}, {expr(vs)})")
            elif r < 0.87:
                lines += [f"{pad}while {c(vs)} do"] + block(vs, depth - 1, ind + 1) + [f"{pad}end"]
            elif r < 0.93:
                lines.append(f"{pad}-- {c(['TODO: handle', 'skip empty', 'normalise the', 'cache the'])} {c(L_NOUN)}")
            else:
                lines.append(f'{pad}print(("{c(L_VERB)} %s"):format({c(vs)}))')
        return lines

    for _ in range(rng.randint(2, 6)):
        params = rng.sample(L_NOUN, rng.randint(0, 3))
        fname = ident(rng.randint(1, 3))
        out.append(f"--- {c(L_VERB).capitalize()} the {c(L_NOUN)}{' of ' + params[0] if params else ''}.")
        out += [f"-- @param {p} {c(L_NOUN)}" for p in params]
        local = rng.random() < 0.3
        out.append(f"{'local function ' + fname if local else 'function ' + M + '.' + fname}({', '.join(params)})")
        out += block(params or ["self"], 2, 1) + [f"  return {c(params or ['nil'])}", "end", ""]
    if rng.random() < 0.4:
        cls = c(L_NOUN).capitalize()
        out += [f"local {cls} = {{}}", f"{cls}.__index = {cls}", "",
                f"function {cls}.new(opts)", f"  local self = setmetatable({{}}, {cls})",
                f"  self.{c(L_NOUN)} = opts.{c(L_NOUN)} or {rng.randint(0, 9)}", "  return self", "end", "",
                f"function {cls}:{ident()}()"] + block(["self"], 1, 1) + ["end", "", f"{M}.{cls} = {cls}"]
    out.append(f"\nreturn {M}")
    return "\n".join(out)
