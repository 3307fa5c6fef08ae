"""``thau-chat`` without ``--message``: the interactive chat (prompt-toolkit + rich).

The REPL survives every failure with the conversation intact: errors are shown and the
next message is tried again, and the conversation is saved after every turn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from rich.console import Console
from rich.text import Text

from thau.chat import commands
from thau.chat.agent import YES_ANSWERS, Approval, ToolFinished
from thau.chat.backends import Selection, adapter_outdated, create_backend
from thau.chat.config import Settings
from thau.chat.conversation import Conversation
from thau.chat.parser import ToolCall
from thau.chat.render import TurnView, approval_panel, error, info
from thau.chat.result_views import ViewMemory
from thau.chat.session import Session, build_session
from thau.errors import ThauError
from thau.tools.registry import Tool, ToolRegistry

PROMPT = "› "
SelectionFactory = Callable[[Settings], Selection]


class LineReader(Protocol):
    """Where the person's lines come from; raises EOFError (Ctrl-D) or KeyboardInterrupt."""

    def read(self) -> str: ...

    def ask(self, question: str) -> str: ...


class SlashCompleter(Completer):
    """Tab completes ``/commands`` at the start of the input."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text:
            return
        for word in self.words:
            if word.startswith(text):
                yield Completion(word, start_position=-len(text))


class PromptReader:
    """A terminal: prompt-toolkit with history, Alt-Enter newlines and completion."""

    def __init__(
        self, history: Path | None, *, input: Input | None = None, output: Output | None = None
    ) -> None:
        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        kwargs: dict[str, Any] = {"input": input, "output": output}
        if history is not None:
            history.parent.mkdir(parents=True, exist_ok=True)
            kwargs["history"] = FileHistory(str(history))
        self.session: PromptSession[str] = PromptSession(
            completer=SlashCompleter(commands.names()),
            key_bindings=bindings,
            multiline=False,
            prompt_continuation="  ",
            **kwargs,
        )
        self._asker: PromptSession[str] = PromptSession(input=input, output=output)

    def read(self) -> str:
        return self.session.prompt(PROMPT)

    def ask(self, question: str) -> str:
        return self._asker.prompt(question)


class PlainReader:
    """Piped stdin: one line per message, the next line answers a y/N question."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdin

    def _line(self) -> str:
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def read(self) -> str:
        return self._line()

    def ask(self, question: str) -> str:
        print(question, end="", flush=True)
        try:
            answer = self._line()
        except EOFError:
            answer = ""
        print(answer, flush=True)
        return answer


class ChatRepl:
    """The state of one interactive chat."""

    def __init__(
        self,
        settings: Settings,
        console: Console,
        reader: LineReader,
        *,
        registry: ToolRegistry,
        create_selection: SelectionFactory = create_backend,
    ) -> None:
        self.settings = settings
        self.console = console
        self.reader = reader
        self.registry = registry
        self.create_selection = create_selection
        self.folder = settings.data_dir / "conversations"
        self.conv = Conversation(self.folder)
        self.system: str | None = settings.system
        self.session: Session | None = None
        self.view: TurnView | None = None
        self.views = ViewMemory()
        """What the result views remember over the chat (warnings already shown)."""
        self.last_results: list[ToolFinished] = []
        """The tool results of the last turn that ran tools, for ``/last``."""
        self.last_results_in: Path | None = None
        """The conversation they belong to."""

    # the model ----------------------------------------------------------------
    def _build(self, settings: Settings) -> Session:
        session = build_session(
            settings,
            approver=self.approve,
            selection=self.create_selection(settings),
            registry=self.registry,
        )
        session.agent.system_override = self.system
        return session

    def connect(self, *, quiet: bool = False) -> bool:
        """Build the session if there is none; on failure say why and keep going."""
        if self.session is not None:
            return True
        try:
            self.session = self._build(self.settings)
        except Exception as exc:  # a backend that cannot start must not end the chat
            error(self.console, _message(exc))
            info(self.console, "The chat goes on; the backend is tried again on each message.")
            return False
        if not quiet:
            info(self.console, self.session.selection.note)
        return True

    def switch_model(self, name: str) -> None:
        settings = self.settings.model_copy(update={"model": name})
        try:
            session = self._build(settings)
        except Exception as exc:
            error(self.console, f"cannot switch to {name}: {_message(exc)}")
            return
        self.settings, self.session = settings, session
        info(self.console, f"Model: {name}. {session.selection.note} The conversation is kept.")

    def set_system(self, text: str | None) -> None:
        self.system = text
        self.conv.system = text
        if self.session is not None:
            self.session.agent.system_override = text

    # conversations ------------------------------------------------------------
    def new_conversation(self) -> None:
        self.conv = Conversation(self.folder)
        self.conv.system = self.system
        self.pick_up_promotion()

    def pick_up_promotion(self) -> None:
        """Load the adapter the training service promoted since the backend was built;
        only between conversations, never within a turn."""
        if self.session is None:
            return
        try:
            outdated = adapter_outdated(self.settings, self.session.selection.backend)
        except ThauError as exc:
            error(self.console, _message(exc))
            return
        if outdated:
            self.session = None
            self.connect()

    def load_conversation(self, ref: str) -> None:
        try:
            conv = Conversation.load(self.folder, ref)
        except ThauError as exc:
            error(self.console, str(exc))
            return
        self.conv = conv
        self.set_system(conv.system or self.system)
        info(self.console, f"Loaded {conv.id}: {len(conv.messages)} messages.")
        last = next((m for m in reversed(conv.messages) if m["role"] == "assistant"), None)
        if last and last["content"].strip():
            self.console.print(Text("last answer: ", style="dim") + Text(last["content"][:500]))

    def save(self) -> None:
        if not self.conv.messages:
            return
        try:
            self.conv.save()
        except OSError as exc:
            error(self.console, f"cannot save the conversation to {self.conv.path}: {exc}")

    # turns --------------------------------------------------------------------
    def approve(self, call: ToolCall, tool: Tool) -> Approval:
        if self.view is not None:
            self.view.pause()
        self.console.print(approval_panel(tool, call))
        try:
            answer = self.reader.ask("Run it? [y/N] ")
        except EOFError:
            answer = ""
        approved = answer.strip().lower() in YES_ANSWERS
        info(self.console, "approved" if approved else "declined")
        if self.view is not None:
            self.view.thinking(f"running {tool.name}…" if approved else "thinking…")
        return Approval(approved, "the person declined")

    def turn(self, text: str | None) -> None:
        """Run one turn (``None``: answer the last message again); failures are shown and
        the conversation is saved whatever happens."""
        if not self.connect():
            if text is not None:
                info(self.console, "The message was not sent (Up arrow brings it back).")
            return
        assert self.session is not None
        self.view = view = TurnView(
            self.console,
            self.conv.path,
            verbose=self.settings.verbose,
            memory=self.views,
            registry=self.registry,
        )
        self.conv.note_run(self.session.run_record())
        events = self.session.agent.run_turn(self.conv.messages, text)
        try:
            view.thinking()
            for event in events:
                view.handle(event)
        except KeyboardInterrupt:
            events.close()
            view.interrupted()
        except ThauError as exc:
            view.pause()
            error(self.console, _message(exc))
        except Exception as exc:  # a bug somewhere below must not lose the conversation
            view.pause()
            error(self.console, f"unexpected {type(exc).__name__}: {exc}")
        finally:
            events.close()
            view.pause()
            self.view = None
            if view.finished:
                self.last_results, self.last_results_in = view.finished, self.conv.path
            self.save()

    def retry(self) -> None:
        messages = self.conv.messages
        while messages and messages[-1]["role"] in ("assistant", "tool"):
            messages.pop()
        if not messages or messages[-1]["role"] != "user":
            info(self.console, "Nothing to retry yet.")
            return
        self.turn(None)

    # the loop -----------------------------------------------------------------
    def loop(self) -> int:
        while True:
            try:
                line = self.reader.read()
            except KeyboardInterrupt:
                info(self.console, "(Ctrl-D or /exit leaves)")
                continue
            except EOFError:
                break
            if not line.strip():
                continue
            try:
                if commands.is_command(line):
                    if commands.dispatch(self, line):
                        break
                else:
                    self.turn(line)
            except KeyboardInterrupt:
                info(self.console, "[interrupted]")
        self.save()
        if self.conv.messages:
            info(self.console, f"Conversation saved: {self.conv.path}")
        return 0


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run_repl(
    settings: Settings,
    load: str | None = None,
    *,
    console: Console | None = None,
    reader: LineReader | None = None,
    registry: ToolRegistry | None = None,
    create_selection: SelectionFactory = create_backend,
) -> int:
    """The interactive chat; 0 when the person leaves, 1 when ``load`` cannot be read."""
    console = console or Console(highlight=False)
    if reader is None:
        interactive = sys.stdin.isatty()
        reader = PromptReader(settings.data_dir / "history") if interactive else PlainReader()
    registry = registry if registry is not None else ToolRegistry.from_entry_points()
    repl = ChatRepl(settings, console, reader, registry=registry, create_selection=create_selection)
    if load:
        try:
            repl.conv = Conversation.load(repl.folder, load)
        except ThauError as exc:
            print(f"thau-chat: error: {_message(exc)}", file=sys.stderr)
            return 1
        repl.set_system(repl.conv.system or repl.system)
    console.print(Text.assemble(("THAU chat", "bold"), (" · /help for commands", "dim")))
    if load:
        info(console, f"Continuing {repl.conv.id} ({len(repl.conv.messages)} messages).")
    repl.connect()
    return repl.loop()
