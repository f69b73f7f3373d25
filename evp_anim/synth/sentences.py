"""The corpus's sentence list: original, emotionally neutral English sentences.

Written for this project (not taken from TIMIT, the Harvard lists or any other corpus).
Each has 6–12 words and lasts roughly 2–4 s at a normal speaking rate; together they cover every
viseme class many times (bilabials, labiodentals, both "th" sounds, sh/ch/j/zh, velars, r, w,
open, mid, close and rounded vowels, diphthongs). Their meaning is everyday and flat, so any of
the eight emotions can be acted onto them.

A sentence's id is its 0-based index formatted ``"%03d"`` (see :func:`sentence_id`).
"""

from __future__ import annotations

from ..errors import EvpError

SENTENCES: tuple[str, ...] = (
    "The blue paper map was folded beside the window.",
    "My brother will measure the garden fence on Thursday.",
    "She put the heavy boxes in the van this morning.",
    "A small boat moved slowly along the quiet river.",
    "We usually buy fresh bread from the shop by the station.",
    "The teacher wrote three numbers on the board after lunch.",
    "His jacket was hanging on a hook behind the door.",
    "They will check the weather before driving to the village.",
    "Both of the old chairs need new legs and cushions.",
    "I think the next bus leaves at half past seven.",
    "Each page of the thick book was covered with notes.",
    "The workers painted the yellow wall during the afternoon.",
    "Mother found a pair of gloves under the kitchen table.",
    "A cup of warm soup was waiting on the tray.",
    "You can move the big plant closer to the light.",
    "The children watched a film about ships and whales.",
    "Our neighbour keeps a vegetable patch behind his house.",
    "Please bring the blue folder when you come upstairs.",
    "The pilot checked the engine twice before the journey.",
    "He usually leaves his bicycle against the stone wall.",
    "The shop on the corner opens at nine in the morning.",
    "Five people were standing in line outside the museum.",
    "The farmer drove his tractor through the muddy field.",
    "Somebody left a pink umbrella on the train yesterday.",
    "The jug of orange juice is on the top shelf.",
    "We heard the church bells ringing across the valley.",
    "Beth wrote a short message on the back of the envelope.",
    "The map shows a path that goes over the hill.",
    "Many boys and girls joined the choir this year.",
    "A gentle wind moved the leaves of the tall oak.",
    "The television was showing a programme about deep oceans.",
    "Father cooked rice and beans for the whole family.",
    "The garage door makes a loud noise when it opens.",
    "Two thousand visitors walked through the gardens in June.",
    "The new office is on the fourth floor of the building.",
    "Jim measured the width of the window with a ruler.",
    "She keeps her keys in a small leather pouch.",
    "The postman brought a parcel wrapped in brown paper.",
    "An old map of the town hangs above the fireplace.",
    "We will paint the fence a pale shade of green.",
    "The bakery sells warm rolls every morning at six.",
    "His voice echoed through the long empty hallway.",
    "Maybe we should move the meeting to Thursday evening.",
    "The fishermen pulled their nets onto the wooden deck.",
    "A woman in a grey coat was reading the newspaper.",
    "The youth club meets in the village hall on Fridays.",
    "Put the spoons and forks back in the top drawer.",
    "The clock on the wall stopped at a quarter past three.",
    "Her cousin plays the violin in a small orchestra.",
    "They usually go swimming at the pool on Sunday.",
    "Bob bought a bag of apples from the market.",
    "The view from the bridge was partly hidden by fog.",
    "We shared a pot of tea while the rain fell.",
    "The judge asked the witness to repeat the answer.",
    "Thick white clouds gathered above the mountains at noon.",
    "The zoo keeper fed the monkeys a bowl of fruit.",
    "A row of bikes stood outside the school gate.",
    "My uncle moved to a cottage near the coast.",
    "The photographs were kept in a box under the bed.",
    "Everyone voted to change the colour of the front door.",
    "The water in the kettle began to boil on the stove.",
    "A beige envelope arrived with the usual Monday post.",
)


def sentence_id(index: int) -> str:
    """``"%03d"`` id of sentence ``index``."""
    if not 0 <= int(index) < len(SENTENCES):
        raise EvpError(f"sentence index {index!r} is out of range: expected 0 to {len(SENTENCES) - 1}")
    return "%03d" % int(index)


def sentence_text(sentence: int | str) -> str:
    """Text of a sentence given its index or its ``"%03d"`` id."""
    try:
        idx = int(sentence)
    except (TypeError, ValueError):
        raise EvpError(f"bad sentence id {sentence!r}: expected a number such as '007'") from None
    sentence_id(idx)
    return SENTENCES[idx]
