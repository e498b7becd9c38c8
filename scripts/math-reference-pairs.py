#!/usr/bin/env python3
"""Reference verdicts for MATH answer pairs, to test powerfleet's `math` grader against.

The paper's code grades MATH answers with the PRM800K checker: equal after the Hendrycks
normalization (`strip_string`), or equal after its own normalization (LaTeX to text with
pylatexenc, units and `\\text{}` dropped, lower case), or element by element under
`sympy.simplify(a - b) == 0`, with three rules that refuse the symbolic check: two plain
fractions must be written identically, an integer is matched only by an integer, and an
expression with more than two distinct letters (or `^{`, `^(`, long exponents) is never
evaluated. This script is an independent re-implementation of those semantics (written for
powerfleet, sharing no code with the original), used only offline to label test data.

It builds pairs (candidate, gold) from the MATH500 gold answers -- each gold against itself and
against rewritings (whitespace, `\\dfrac`, `\\left(`, units and `\\text{}`, degree signs,
decimals for fractions, rounded decimals, thousands separators) and against other problems'
answers -- labels each with the reference verdict and writes two JSONL files: a development set
and a held-out set (split by problem id hash, so a problem's pairs all land on one side).

Usage (needs sympy and pylatexenc, e.g. `pip install --target DIR pylatexenc` and
PYTHONPATH=DIR):

    python3 scripts/math-reference-pairs.py /work/shared/data/MATH500.json \\
        crates/powerfleet-grade/tests/data

Writes math500_answers.jsonl (id, answer: the gold answers only, no problem text),
math_pairs_dev.jsonl and math_pairs_heldout.jsonl (id, candidate, gold, reference).
"""

import hashlib
import json
import os
import random
import re
import signal
import sys

import sympy
from pylatexenc import latex2text
from sympy.parsing import sympy_parser

# --------------------------------------------------------------------------------------------
# Hendrycks normalization (`strip_string`), as the MATH release defines it.


def _fracs(s):
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return s
        a, b = part[0], part[1]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + part[2:]
        else:
            out += "{" + a + "}" + b + part[2:]
    return out


def _slash(s):
    if s.count("/") != 1:
        return s
    a, b = s.split("/")
    try:
        ia, ib = int(a), int(b)
    except ValueError:
        return s
    if s != f"{ia}/{ib}":
        return s
    return "\\frac{" + str(ia) + "}{" + str(ib) + "}"


def _right_units(s):
    if "\\text{ " in s:
        return s.split("\\text{ ")[0]
    return s


def _sqrt(s):
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if part and part[0] != "{":
            out += "\\sqrt{" + part[0] + "}" + part[1:]
        else:
            out += "\\sqrt" + part
    return out


def strip_string(s):
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _sqrt(s)
    s = s.replace(" ", "")
    try:
        s = _fracs(s)
    except IndexError:
        return s
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash(s)


def mathd_normalize(answer):
    if answer is None:
        return None
    answer = answer.strip()
    try:
        m = re.search(r"^\\text\{(?P<text>.+?)\}$", answer)
        if m is not None:
            answer = m.group("text").strip()
        return strip_string(answer)
    except Exception:  # the original returns the answer unchanged on any error
        return answer


# --------------------------------------------------------------------------------------------
# The PRM800K normalization and symbolic check.

UNITS = ["degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day",
         "week", "month", "year", "foot", "feet", "inch", "yard"]


def _is_float(x):
    try:
        float(x)
        return True
    except ValueError:
        return False


def _near_int(x):
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def _is_frac(x):
    return re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", x) is not None


def _commas(x):
    pattern = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
    while True:
        nxt = pattern.sub(r"\1\3\4", x)
        if nxt == x:
            return x
        x = nxt


def _str_is_int(x):
    try:
        return _near_int(float(_commas(x)))
    except (ValueError, OverflowError):
        return False


def _latex_to_text(x):
    x = x.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    x = latex2text.LatexNodes2Text().latex_to_text(x)
    for a, b in [("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")]:
        x = x.replace(a, b)
    return x.strip()


def prm_normalize(x):
    if x is None:
        return None
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", x)
    if m is not None:
        x = m.group("text")
    x = x.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    x = x.replace(" or ", " , ").replace(" and ", " , ")
    x = x.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for unit in UNITS:
        x = re.sub(f"{unit}(es)?(s)? *(\\^[0-9]+)?", "", x)
    x = re.sub(r"\^ *\\circ", "", x)
    if x and x[0] == "{" and x[-1] == "}":
        x = x[1:-1]
    x = re.sub(r",\\! *", "", x)
    if _is_float(x) and _near_int(float(x)):
        x = str(int(round(float(x))))
    if "\\" in x:
        try:
            x = _latex_to_text(x)
        except Exception:
            pass
    x = re.sub("- *", "-", x)
    x = re.sub("([0-9]) +([0-9])", r"\1+\2", x)
    x = x.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(x):
        x = str(int(float(_commas(x).replace(",", ""))))
    return x


def _letters(x):
    x = x.replace("sqrt", "").replace("frac", "")
    return len({c for c in x if c.isalpha()})


def _may_eval(x):
    if _letters(x) > 2:
        return False
    if "^{" in x or "^(" in x:
        return False
    return re.search(r"\^[0-9]+\^", x) is None and re.search(r"\^[0-9][0-9]+", x) is None


class _Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Timeout()


def sympy_equal(gold, given):
    expr = f"({gold})-({given})"
    if not _may_eval(expr):
        return False
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        parsed = sympy_parser.parse_expr(
            expr.replace("^", "**"),
            transformations=sympy_parser.standard_transformations
            + (sympy_parser.implicit_multiplication_application,),
        )
        return sympy.simplify(parsed) == 0
    except _Timeout:
        raise
    except Exception:
        return False
    finally:
        signal.alarm(0)


def _split(x):
    x = _commas(x)
    if not x:
        return []
    if len(x) > 2 and x[0] in "()[]" and x[-1] in "()[]" and all(c not in x[1:-1] for c in "()[]"):
        return [e.strip() for e in x[1:-1].split(",")]
    return [x]


def reference_verdict(given, gold):
    if given is None:
        return False
    if mathd_normalize(gold) == mathd_normalize(given):
        return True
    g, c = prm_normalize(gold), prm_normalize(given)
    if g is None:
        return False
    if g == c:
        return True
    if not c:
        return False
    ge, ce = _split(g), _split(c)
    if len(ge) > 1 and (g[0] != c[0] or g[-1] != c[-1]):
        return False
    if len(ge) != len(ce):
        return False
    for a, b in zip(ge, ce):
        if _is_frac(a) and _is_frac(b):
            ok = a == b
        elif _str_is_int(a) != _str_is_int(b):
            ok = False
        else:
            ok = sympy_equal(a, b)
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Candidate answers.

FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
INT = re.compile(r"^-?\d+$")
DEC = re.compile(r"^-?\d*\.\d+$")


def variants(gold, rng):
    """Rewritings of `gold`, each with a label saying what was changed."""
    out = []
    compact = re.sub(r"(?<![\\a-zA-Z]) +| +(?=[^a-zA-Z])", "", gold)
    if compact != gold:
        out.append(("no-spaces", compact))
    spaced = re.sub(r"([,=+])", r"\1 ", gold)
    spaced = re.sub(r"\\\\", r" \\\\ ", spaced)
    if spaced != gold:
        out.append(("spaces", spaced))
    padded = gold.replace("{", "{ ").replace("}", " }") if "\\begin" not in gold else None
    if padded and padded != gold:
        out.append(("brace-spaces", padded))
    if "\\frac" in gold:
        out.append(("dfrac", gold.replace("\\frac", "\\dfrac")))
    if "\\dfrac" in gold:
        out.append(("frac", gold.replace("\\dfrac", "\\frac")))
    if "\\left" in gold:
        out.append(("no-left-right", gold.replace("\\left", "").replace("\\right", "")))
    elif gold.startswith("(") and gold.endswith(")"):
        out.append(("left-right", "\\left" + gold[:-1] + "\\right)"))
    if re.match(r"^\\text\{.*\}$", gold):
        out.append(("untexted", gold[len("\\text{"):-1]))
    elif re.match(r"^[A-Za-z][a-z]+$", gold):
        out.append(("texted", "\\text{" + gold + "}"))
        out.append(("upper", gold.upper()))
    m = FRAC.match(gold)
    if m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        value = a / b
        out.append(("slash", f"{sign}{a}/{b}"))
        out.append(("unreduced", f"{sign}\\frac{{{2 * a}}}{{{2 * b}}}"))
        d = b
        for p in (2, 5):
            while d % p == 0:
                d //= p
        if d == 1 and b != 0:
            out.append(("decimal", sign + repr(round(value, 12)).rstrip("0").rstrip(".")))
        else:
            out.append(("rounded", sign + f"{value:.6f}"))
            out.append(("rounded2", sign + f"{value:.2f}"))
    if INT.match(gold):
        n = int(gold)
        out.append(("off-by-one", str(n + 1)))
        out.append(("trailing-zero", f"{n}.0"))
        out.append(("unit-text", gold + "\\text{ cm}"))
        out.append(("unit-word", gold + " inches"))
        out.append(("degrees", gold + "^\\circ"))
        out.append(("percent", gold + "\\%"))
        out.append(("dollars", "\\$" + gold))
        out.append(("equation", "x = " + gold))
        out.append(("braced", "{" + gold + "}"))
        if abs(n) >= 1000:
            out.append(("thousands", f"{n:,}"))
        out.append(("frac-of-int", f"\\frac{{{2 * n}}}{{2}}"))
    if DEC.match(gold):
        out.append(("decimal-zero", gold + "0"))
        out.append(("rounded-dec", f"{float(gold):.1f}"))
    if "^\\circ" in gold:
        out.append(("no-degrees", gold.replace("^\\circ", "")))
    if "\\sqrt{" in gold:
        out.append(("sqrt-unbraced", re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", gold)))
    if "\\pi" in gold:
        out.append(("pi-numeric", f"{rng.uniform(1, 9):.4f}"))
    if gold.startswith("\\begin{pmatrix}"):
        out.append(("matrix-spaces", gold.replace("\\\\", " \\\\ ").replace("&", " & ")))
    if re.search(r"\\(sin|cos|tan|cot|sec|csc|log|ln)\b", gold):
        out.append(("command-space", re.sub(r"\\(sin|cos|tan|cot|sec|csc|log|ln) *", r"\\\1 ", gold)))
        out.append(("command-nospace", re.sub(r"\\(sin|cos|tan|cot|sec|csc|log|ln) +", r"\\\1", gold)))
    if "," in gold and not gold.startswith(("(", "[", "\\{")):
        items = [x.strip() for x in gold.split(",")]
        out.append(("reordered", ", ".join(reversed(items))))
    if gold.startswith("\\{") and gold.endswith("\\}") and "," in gold:
        items = [x.strip() for x in gold[2:-2].split(",")]
        out.append(("set-reordered", "\\{" + ", ".join(reversed(items)) + "\\}"))
    if m and m.group(1) == "-":
        out.append(("sign-inside", f"\\frac{{-{m.group(2)}}}{{{m.group(3)}}}"))
    if m and int(m.group(2)) > int(m.group(3)) > 1:
        whole, rest = divmod(int(m.group(2)), int(m.group(3)))
        out.append(("mixed-number", f"{m.group(1)}{whole}\\frac{{{rest}}}{{{m.group(3)}}}"))
    root = re.match(r"^(\d+)\\sqrt\{(\d+)\}$", gold)
    if root:
        k, n = int(root.group(1)), int(root.group(2))
        out.append(("sqrt-absorbed", f"\\sqrt{{{k * k * n}}}"))
        out.append(("sqrt-decimal", f"{k * n ** 0.5:.4f}"))
    letter = re.match(r"^\\text\{\(([A-E])\)\}$", gold)
    if letter:
        out.append(("letter-bare", letter.group(1)))
        out.append(("letter-parens", f"({letter.group(1)})"))
    if re.match(r"^[\(\[].*,.*[\)\]]$", gold) and "\\" not in gold:
        flipped = ("[" if gold[0] == "(" else "(") + gold[1:]
        out.append(("bracket-changed", flipped))
    terms = re.split(r"(?<=[^\^_{(])\+", gold.replace(" ", ""))
    if len(terms) == 2 and re.search(r"[a-z]", gold) and "(" not in gold:
        out.append(("terms-swapped", terms[1] + "+" + terms[0]))
    return [(k, v) for k, v in out if v != gold]


def main():
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as f:
        problems = json.load(f)
    rng = random.Random(20251129)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "math500_answers.jsonl"), "w") as f:
        for p in problems:
            f.write(json.dumps({"id": p["id"], "answer": p["answer"]}) + "\n")
    golds = [(p["id"], p["answer"]) for p in problems]
    rows = []
    for pid, gold in golds:
        pairs = [("same", gold)] + variants(gold, rng)
        for _ in range(3):
            pairs.append(("other-problem", rng.choice(golds)[1]))
        for kind, candidate in pairs:
            try:
                verdict = reference_verdict(candidate, gold)
            except _Timeout:
                print(f"skipped (sympy timed out): {candidate!r} vs {gold!r}", file=sys.stderr)
                continue
            rows.append({"id": pid, "kind": kind, "candidate": candidate, "gold": gold,
                         "reference": verdict})
    dev = open(os.path.join(target, "math_pairs_dev.jsonl"), "w")
    held = open(os.path.join(target, "math_pairs_heldout.jsonl"), "w")
    for row in rows:
        bucket = int(hashlib.sha256(row["id"].encode()).hexdigest(), 16) % 2
        (dev if bucket == 0 else held).write(json.dumps(row) + "\n")
    dev.close()
    held.close()
    accepted = sum(r["reference"] for r in rows)
    print(f"{len(rows)} pairs, {accepted} accepted by the reference", file=sys.stderr)


if __name__ == "__main__":
    main()
