"""The help screen shows each link that is not live with its whole reason: the header
has room for about 60 cells of it, and a refused certificate's problem and fingerprint
(docs/hyperv-tls.md) are longer — at 80 columns too, wrapped, never cut."""

from __future__ import annotations

from pathlib import Path

from apphelp import help_text as shown
from apphelp import make_app, populated, wait_for

from ventana.tui.help_screen import HelpScreen

FINGERPRINT = ":".join(f"{i * 7 % 256:02X}" for i in range(32))
REASON = (f"TLS certificate of hv-node-17.corp.example:5986 not trusted: it expired on "
          f"2026-12-01 (SHA-256 fingerprint {FINGERPRINT}); no password was sent — renew "
          "the node's WinRM certificate\x1b[31m")


async def test_help_shows_a_down_links_whole_reason_at_80_columns(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await populated(pilot)
        app.backend.drop_connection(reason=REASON)  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: app.store.stale)
        header_reason = app.store.link_reason()
        assert FINGERPRINT in header_reason  # the store keeps it whole…
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = shown(app.screen)
        flat = "".join(text.split())
        # …and help shows it whole, wrapped at the dialog's width, the escape made visible.
        assert "".join(FINGERPRINT.split()) in flat, text
        assert "renewthenode'sWinRMcertificate\\x1b[31m" in flat, text
        assert "\x1b" not in text
        assert text.index("whole reason") < text.index("keys and commands")


async def test_help_lists_no_links_when_all_are_live(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await populated(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "whole reason" not in shown(app.screen)


async def test_the_header_says_where_a_cut_reason_is_whole(tmp_path: Path) -> None:
    """Where the header cuts a link's reason (and has room), it says that ``?`` shows the
    whole text; a reason that fits is shown as it is."""
    from ventana.tui.header import WHOLE_TEXT_HINT, StatusHeader

    app = make_app(tmp_path)
    async with app.run_test(size=(160, 24)) as pilot:
        await populated(pilot)
        header = app.query_one(StatusHeader)
        app.backend.drop_connection(reason=REASON)  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: app.store.stale)
        await pilot.pause(0.2)
        shown = header.render().plain
        assert WHOLE_TEXT_HINT.strip() in shown and FINGERPRINT not in shown, shown
        app.backend.restore_connection()  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: not app.store.stale)
        app.backend.drop_connection(reason="no answer for 30 s")  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: app.store.stale)
        await pilot.pause(0.2)
        shown = header.render().plain
        assert "no answer for 30 s" in shown and WHOLE_TEXT_HINT.strip() not in shown, shown
