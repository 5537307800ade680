"""Random container names in Docker's style: adjective_noun."""

from __future__ import annotations

import random

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
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NOUNS)}"
