"""`sentiment`: a product or movie review (~55-105 words, mixed cues) -> "positive" / "negative".

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("sentiment").generate("train", n=3, seed=0)[0]
    ex.prompt        # "Review: I bought the Quenfa kettle ... \nSentiment:"
    ex.completion    # " positive"           ex.answer == "positive"

Stands in for IMDB in paper 2 (one-word output: a task expected to memorize little). A review
mixes 2-4 remarks that agree with its label and 1-2 that disagree, around neutral details with
names, prices and made-up brand or title words; the closing verdict agrees with the label, sometimes
hedged ("Despite a few flaws ..."). Labels are balanced. Grade with "first_line".
"""

from __future__ import annotations

import random

from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import (CITIES, FIRST_NAMES, MOVIE_GENRES, PRODUCT_KINDS, SURNAMES,
                                        WEEKDAYS, TextTask, a_an, coin_word)

# aspect -> (positive remarks, negative remarks); {it} is "it" or the item's short name.
PRODUCT_ASPECTS = {
    "build": (("The {thing} feels solid and well made.", "Everything about the build is sturdy."),
              ("The {thing} feels cheap and flimsy.", "A part snapped off within a week.")),
    "design": (("The design is clean and easy to use.", "It looks great on the shelf."),
               ("The buttons are confusing and badly placed.", "It looks much uglier in person.")),
    "price": (("For {price} dollars it is a real bargain.", "It is fair value for the money."),
              ("At {price} dollars it is far too expensive.",
               "It is overpriced for what it does.")),
    "noise": (("It runs almost silently.", "It is pleasantly quiet, even at full power."),
              ("It is loud enough to wake the whole house.", "It rattles and hums constantly.")),
    "service": (("Customer service answered my question within an hour.",
                 "The seller replaced a missing screw without any fuss."),
                ("Customer service never replied to my emails.",
                 "The seller refused to take it back.")),
    "instructions": (("The instructions were short and clear.", "Setting it up took two minutes."),
                     ("The instructions were useless.", "Setting it up took an entire evening.")),
}
MOVIE_ASPECTS = {
    "acting": (("{star} gives a warm, convincing performance.",
                "The cast is excellent throughout."),
               ("{star} seems bored in every scene.", "The acting is stiff and unconvincing.")),
    "plot": (("The story is clever and full of surprises.",
              "The plot kept me guessing until the end."),
             ("The plot makes no sense at all.", "The story is predictable from the first scene.")),
    "music": (("The music is beautiful.", "The soundtrack lifts every scene."),
              ("The music is loud and distracting.", "The soundtrack is forgettable.")),
    "pacing": (("The two hours fly by.", "The pacing is tight and never drags."),
               ("The middle hour drags terribly.", "It is at least thirty minutes too long.")),
    "visuals": (("The photography of {city} is stunning.", "Every shot looks carefully composed."),
                ("The effects look cheap.", "Many scenes are too dark to see anything.")),
    "ending": (("The ending is moving and earned.", "The final scene stayed with me for days."),
               ("The ending is rushed and silly.", "The final twist ruins everything before it.")),
}
VERDICTS = {
    "positive": ("Overall, I would recommend it.", "In the end it was worth every penny.",
                 "Despite a few flaws, I enjoyed it a lot.", "I would happily {again}."),
    "negative": ("Overall, I cannot recommend it.", "In the end it was a waste of money and time.",
                 "Despite a few good moments, I regret it.", "I will not {again}."),
}
CONTRAST = ("However, ", "On the other hand, ", "That said, ", "", "")
NEUTRAL = {  # neutral details, per domain
    "product": ("My {rel} uses one too.", "I first heard about it from my friend {friend}.",
                "It arrived on a {day}, two days late.", "I had read mixed reviews beforehand.",
                "It replaced an old one that lasted {years} years.",
                "I mostly use it at home in the evenings."),
    "movie": ("My {rel} had already seen it twice.", "I went with my friend {friend}.",
              "It runs for {minutes} minutes.", "I had read mixed reviews beforehand.",
              "It is based on a novel by {author}.", "The cinema was about half full."),
}


def _decap(text: str) -> str:
    """Lowercase the first word after a contrast word, unless it is a name."""
    return text[0].lower() + text[1:] if text.split()[0] in _COMMON_STARTS else text


_COMMON_STARTS = {"The", "It", "Everything", "A", "Customer", "Setting", "Many", "Every", "For",
                  "At"}


def _item(rng: random.Random) -> tuple[str, dict, dict[str, str]]:
    city = rng.choice(CITIES)
    f = dict(city=city, day=rng.choice(WEEKDAYS), friend=rng.choice(FIRST_NAMES),
             rel=rng.choice(("sister", "father", "flatmate", "uncle")),
             years=str(rng.randint(2, 15)), minutes=str(rng.randint(85, 175)),
             author=f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}")
    if rng.random() < 0.5:
        brand, kind = coin_word(rng).capitalize(), rng.choice(PRODUCT_KINDS)
        f.update(thing=kind, price=str(rng.randint(12, 480)), domain="product",
                 again=f"buy from {brand} again")
        when = rng.choice(("last month", "in the spring", "as a gift", "after a long search"))
        opening = (f"I bought the {brand} {kind} from a shop in {city} for {f['price']} dollars "
                   f"{when}.")
        return opening, PRODUCT_ASPECTS, f
    title = f"The {coin_word(rng).capitalize()} of {rng.choice(CITIES)}"
    genre, director = rng.choice(MOVIE_GENRES), f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
    f.update(star=f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}",
             price=str(rng.randint(6, 24)), domain="movie",
             again="watch another film by this director")
    opening = (f"I watched {title}, {a_an(genre)} {genre} directed by {director}, at the cinema "
               f"in {city} on {f['day']}, and the ticket cost {f['price']} dollars.")
    return opening, MOVIE_ASPECTS, f


def _make(rng: random.Random) -> tuple[str, str, str, dict]:
    label = rng.choice(("positive", "negative"))
    opening, aspects, f = _item(rng)
    n_major, n_minor = rng.randint(2, 4), rng.randint(1, 2)
    names = rng.sample(list(aspects), n_major + n_minor)
    agree = 0 if label == "positive" else 1
    remarks = [(rng.choice(aspects[a][agree]), True) for a in names[:n_major]]
    remarks += [(rng.choice(aspects[a][1 - agree]), False) for a in names[n_major:]]
    rng.shuffle(remarks)
    body = []
    for i, (text, agrees) in enumerate(remarks):
        lead = rng.choice(CONTRAST) if i > 0 and agrees != remarks[i - 1][1] else ""
        text = text.format(**f)
        body.append(lead + _decap(text) if lead else text)
    for filler in rng.sample(NEUTRAL[f["domain"]], rng.randint(2, 3)):
        body.insert(rng.randint(0, len(body)), filler.format(**f))
    verdict = rng.choice(VERDICTS[label]).format(**f)
    prompt = f"Review: {' '.join([opening, *body, verdict])}\nSentiment:"
    return prompt, " " + label, label, {"agreeing": n_major, "disagreeing": n_minor}


@register_task("sentiment")
class Sentiment(TextTask):
    answer_extractor = "first_line"  # answer = first line of the generation, stripped
    eval_splits = {"test": "test"}  # audited on test only: no ood or robustness variants
    make = staticmethod(_make)
