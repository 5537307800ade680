"""Random container names in Docker's style: adjective_noun."""

from __future__ import annotations

import os

_ADJECTIVES = (
    "brave busy calm clever cool eager fancy gentle happy jolly keen kind lucky "
    "merry nimble proud quick quiet sharp shy silly sleepy smart snappy stoic "
    "sweet swift tender vivid wise witty zealous"
).split()
_NOUNS = (
    "badger beaver bison crane dolphin falcon ferret gecko heron ibis jackal koala "
    "lemur lynx marten newt otter panda pika quokka raven salmon stoat tapir "
    "turtle vole walrus wombat yak zebra"
).split()


def random_name() -> str:
    # os.urandom, not random: the random module costs a millisecond to import.
    a, b = os.urandom(2)
    return f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[b % len(_NOUNS)]}"
