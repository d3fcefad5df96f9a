"""What a newcomer sees from the interpreter: ``help(actorq)``, ``dir(ref)``,
``help(ref.method)``. The names are imported lazily, so these check that
laziness hides nothing from pydoc and completion."""

from __future__ import annotations

import pydoc

import actorq
from actorq._actor import ActorRef, Method


@actorq.actor
class Greeter:
    """Says hello to whoever asks."""

    def greet(self, who: str) -> str:
        """Return a greeting for ``who``."""
        return f"hello {who}"

    def undocumented(self) -> None:
        pass

    def _private(self) -> None:
        """Not a message target."""


def _ref() -> ActorRef:
    return ActorRef((1 << 32) | 7, f"{Greeter.__module__}:{Greeter.__qualname__}", "g")


def test_help_actorq_shows_the_api_and_how_to_start() -> None:
    text = pydoc.render_doc(actorq, renderer=pydoc.plaintext)
    assert "@actorq.actor" in text  # the module docstring's first program
    for name in actorq.__all__:
        assert name in text, f"help(actorq) does not mention {name}"
    functions = "\n" + text.split("\nFUNCTIONS\n", 1)[1]
    for name in ("actor", "run", "start", "connect", "runtime", "self_ref", "sleep"):
        assert f"\n    {name}(" in functions, f"{name} is not listed under FUNCTIONS"


def test_every_public_name_resolves_and_says_what_it_is() -> None:
    assert sorted(actorq.__all__) == actorq.__all__
    assert set(actorq.__all__) <= set(dir(actorq))
    for name in actorq.__all__:
        obj = getattr(actorq, name)
        assert (obj.__doc__ or "").strip(), f"actorq.{name} has no docstring"


def test_dir_of_a_ref_lists_the_actors_methods() -> None:
    names = dir(_ref())
    assert {"greet", "undocumented", "stop"} <= set(names)
    assert "_private" not in names


def test_a_method_ref_carries_the_methods_docstring() -> None:
    ref = _ref()
    assert ref.greet.__doc__ == "Return a greeting for ``who``."
    assert ref.greet.with_timeout(1.0).__doc__ == "Return a greeting for ``who``."
    assert ref.undocumented.__doc__ is None
    assert "Return a greeting" in pydoc.render_doc(ref.greet, renderer=pydoc.plaintext)
    assert ref.__doc__ == "Says hello to whoever asks."
    # the classes keep their own docstrings for help(ActorRef) / help(Method)
    assert "handle to an actor" in (ActorRef.__doc__ or "")
    assert "call it to ask" in (Method.__doc__ or "")
    assert "call it to ask" in pydoc.render_doc(Method, renderer=pydoc.plaintext)


def test_a_ref_to_a_class_not_imported_here_still_works() -> None:
    ref = ActorRef((1 << 32) | 8, "not_imported_here:Thing")
    assert "stop" in dir(ref)
    assert "handle to an actor" in (ref.__doc__ or "")
    assert "call it to ask" in (ref.anything.__doc__ or "")
