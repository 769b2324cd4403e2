"""What a demo task is about: the subject the demo model names its steps, files and code after.

The demo stays deterministic and offline, yet follows the task a person typed: "Add a farewell
module" plans farewell steps and writes `src/farewell.py` with a `farewell(name)` function and
its test. A title without a usable word falls back to the description, then to the greeting
the demo always had.
"""

import keyword
import re
from dataclasses import dataclass

#: Words that say what to do or what kind of thing, not what it is about.
_FILLER = (
    "a an the and or of for to in on with into from by at as it its this that my our your "
    "add adds adding create creates implement implements write writes build builds make "
    "makes ship ships new simple small basic tiny please module modules function functions "
    "helper helpers feature features file files code script library lib package support "
    "some introduce provide do let us we me i can should would"
)
FILLER = frozenset(_FILLER.split())
GREETING_WORDS = frozenset({"greet", "greets", "greeting", "greetings", "hello", "hi"})
#: Names a module must not take: Python keywords, and names its test would shadow.
RESERVED = frozenset(keyword.kwlist) | {"test", "tests", "src", "sys", "os", "re", "unittest"}
WORD = re.compile(r"[a-z][a-z0-9]*")


@dataclass(frozen=True)
class Subject:
    """`module` names the files (src/<module>.py, tests/test_<module>.py), `function` the one
    function, `phrase` the words it answers with ("Farewell, Ada!")."""

    module: str
    function: str
    phrase: str

    @property
    def is_greeting(self) -> bool:
        return self.module == "greeting"

    @property
    def source(self) -> str:
        return f"src/{self.module}.py"

    @property
    def test(self) -> str:
        return f"tests/test_{self.module}.py"


GREETING = Subject(module="greeting", function="greet", phrase="Hello")


def subject_of(title: str, description: str = "") -> Subject:
    """The subject of a task, from its title (else its description): its first one or two
    meaningful words, e.g. "Add a farewell module" -> farewell, "Implement rate limiting" ->
    rate_limiting."""
    for text in (title, description):
        words = [w for w in WORD.findall(text.lower()) if w not in FILLER][:2]
        if not words:
            continue
        if words[0] in GREETING_WORDS:
            return GREETING
        module = "_".join(words)
        if module in RESERVED:
            module += "_tools"
        return Subject(module=module, function=module, phrase=" ".join(words).capitalize())
    return GREETING


def subject_in(text: str) -> Subject:
    """The subject a step or review message names through its module's or test's path."""
    match = re.search(r"\b(?:src/|tests/test_)([a-z][a-z0-9_]*)\.py\b", text)
    if match is None or match[1] == "greeting":
        return GREETING
    module = match[1]
    words = module.removesuffix("_tools").replace("_", " ")
    return Subject(module=module, function=module, phrase=words.capitalize())
