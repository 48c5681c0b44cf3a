"""Unsubscribe: signed links in every message that honours it, and the endpoint behind them.

A campaign message carries ``List-Unsubscribe`` (Herald's https URL, plus a ``mailto:`` where
configured) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), and a
visible link in its footers. The link holds a signed token (:mod:`.tokens`) naming the
contact, the campaign and the message, never the address. The endpoint (:mod:`.endpoint`)
unsubscribes on a one-click POST at once; a GET only shows a page with a button, because mail
scanners follow links. The effect (:mod:`.effects`) is a suppression of the address, which
the next batch of every message that honours unsubscribes already leaves out.
"""
