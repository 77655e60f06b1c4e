"""`dialog`: a patient's message (symptoms, age, duration, medicine) -> a doctor's reply.

The reply is ~80-150 words (mean ~120); the message ~60-80.

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("dialog").generate("train", n=3, seed=0)[0]
    ex.prompt        # "Patient: Hello doctor. My name is ... What should I do?\nDoctor:"
    ex.completion    # " Hi Mira, thanks for your question. ..."

Stands in for ChatDoctor in paper 2 (long, loosely constrained output: a task expected to
memorize a lot). The reply is assembled from sections (greeting, assessment, medicine, tests,
self-care, warning signs, closing), each with several phrasings, and repeats facts from the
message (name, duration, dose). `meta["alternatives"]` holds other valid replies.
"""

from __future__ import annotations

import random

from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import (CITIES, DRUGS, FIRST_NAMES, NUMBER_WORDS, OCCUPATIONS,
                                        SYMPTOMS, TextTask, a_an)

OPENERS = ("Hello doctor.", "Hi doctor, I hope you can help me.", "Good evening.",
           "Dear doctor, I have a question.")
WORSE = ("in the morning", "at night", "after work", "after I eat", "when I am tired",
         "at the weekend")
WORRIES = ("I am worried it might be something serious.",
           "My {rel} had something similar last year.",
           "It is starting to affect my work as {occ_a} in {city}.",
           "I do not want to waste anyone's time, but it is not going away.")
RELATIVES = ("mother", "father", "sister", "brother", "aunt", "neighbour")
FREQS = ("once a day", "twice a day", "every morning", "at night", "when the symptoms are bad")
DOSES = (5, 10, 20, 25, 50, 100, 200, 250, 400, 500)
TIPS = ("drink plenty of water", "keep regular hours for sleep",
        "avoid heavy meals late in the evening",
        "take short breaks from screens", "do some gentle stretching each morning",
        "keep a diary of when the symptoms appear", "cut down on coffee and alcohol",
        "take a short walk every day")
FLAGS = ("a high fever", "chest pain", "sudden weakness on one side", "trouble breathing",
         "fainting", "pain that wakes you at night", "a rash that spreads quickly")

GREETINGS = ("Hi {first}, thanks for your question.",
             "Hello {first}. I have read your message carefully.",
             "Dear {first}, thank you for writing in.",
             "Hello {first}, and thanks for the details.")
ASSESS = (
    "{Sym1} and {sym2} for {dur} in a {age}-year-old are most often due to {cause1}, although "
    "{cause2} can also play a part.",
    "From what you describe, the {sym1} is most likely caused by {cause1}, and the {sym2} may be "
    "linked to {cause2}.",
    "Having {sym1} together with {sym2} for {dur} is common at {age}, and it usually points to "
    "{cause1} or {cause2} rather than anything serious.",
)
MEDICINE = (
    "{Drug} at {dose} mg {freq} is a reasonable start, but do not take more than the label allows.",
    "You can continue the {drug} {dose} mg for now, but since it has not helped much, ask your "
    "pharmacist whether another option suits you better.",
    "As the {drug} has not helped after {dur}, I would not raise the dose above {dose} mg without "
    "speaking to your own doctor first.",
)
TESTS = (
    "I would suggest {test1} and {test2} to rule out anything more serious.",
    "It would be sensible to arrange {test1}; {test2} may also be useful.",
    "Please ask your family doctor for {test1} and, if possible, {test2}.",
)
CARE = ("In the meantime, try to {t1}, {t2} and {t3}.",
        "Meanwhile, it helps to {t1} and {t2}. It is also worth trying to {t3}.",
        "Until then, {t1}, {t2}, and {t3}.")
WARN = ("Please see a doctor in person promptly if you notice {f1} or {f2}.",
        "If you develop {f1} or {f2}, go to an emergency department straight away.",
        "Warning signs that need urgent care are {f1} and {f2}.")
CLOSINGS = ("I hope this helps, and I wish you a quick recovery.",
            "Take care, and feel free to write again with your results.",
            "Wishing you good health.", "Let me know how you get on, {first}.")


def _second_person(phrase: str) -> str:
    return phrase.replace(" my ", " your ").replace(" I ", " you ")


def _facts(rng: random.Random) -> dict[str, str]:
    s1, s2 = rng.sample(SYMPTOMS, 2)
    occ = rng.choice(OCCUPATIONS)
    unit = rng.choice(("days", "weeks", "months"))
    drug = rng.choice(DRUGS)
    f = dict(first=rng.choice(FIRST_NAMES), age=str(rng.randint(18, 85)),
             sex=rng.choice(("man", "woman")), dur=f"{NUMBER_WORDS[rng.randint(2, 11)]} {unit}",
             sym1=_second_person(s1[0]), sym2=_second_person(s2[0]), my1=s1[0], my2=s2[0],
             cause1=s1[2], cause2=s2[2], test1=s1[3], test2=s2[3], drug=drug,
             Drug=drug.capitalize(), dose=str(rng.choice(DOSES)), freq=rng.choice(FREQS),
             worse=rng.choice(WORSE), occ_a=f"{a_an(occ)} {occ}", city=rng.choice(CITIES),
             rel=rng.choice(RELATIVES))
    f["Sym1"] = f["sym1"][:1].upper() + f["sym1"][1:]
    t, fl = rng.sample(TIPS, 3), rng.sample(FLAGS, 2)
    f.update(t1=t[0], t2=t[1], t3=t[2], f1=fl[0], f2=fl[1])
    return f


def _message(rng: random.Random, f: dict[str, str]) -> str:
    return (f"{rng.choice(OPENERS)} My name is {f['first']} and I am a {f['age']}-year-old "
            f"{f['sex']}. For the past {f['dur']} I have had {f['my1']} and {f['my2']}. It is "
            f"worse {f['worse']}. I have been taking {f['drug']} {f['dose']} mg {f['freq']}, but "
            f"it has not helped much. {rng.choice(WORRIES).format(**f)} What should I do?")


def _reply(rng: random.Random, f: dict[str, str]) -> str:
    parts = [GREETINGS, ASSESS, MEDICINE]
    if rng.random() < 0.8:
        parts.append(TESTS)
    parts.append(CARE)
    if rng.random() < 0.7:
        parts.append(WARN)
    parts.append(CLOSINGS)
    return " " + " ".join(rng.choice(p).format(**f) for p in parts)


def _make(rng: random.Random) -> tuple[str, str, None, dict]:
    f = _facts(rng)
    prompt = f"Patient: {_message(rng, f)}\nDoctor:"
    replies = [_reply(rng, f) for _ in range(4)]
    alternatives = [r for r in dict.fromkeys(replies[1:]) if r != replies[0]]
    meta = {"alternatives": alternatives,
            "facts": {k: f[k] for k in ("first", "age", "dur", "drug", "dose")}}
    return prompt, replies[0], None, meta


@register_task("dialog")
class Dialog(TextTask):
    answer_extractor = None  # free text: graded by overlap metrics, not an exact answer
    eval_splits = {"test": "test"}  # audited on test only: no ood or robustness variants
    make = staticmethod(_make)
