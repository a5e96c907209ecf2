#!/usr/bin/env python3
"""Opens a run folder's index.html in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python package; nothing is downloaded) and checks what a reader would see:

  * the page loads with no console error, no uncaught script error and no failed request;
  * every <img> it shows loaded and decoded (naturalWidth > 0), and every local file it links exists;
  * every image is shown at no less than 95 % of its drawn width (its text stays readable) in a window
    1400 pixels wide, or fills the page's width when it is wider than the page;
  * the page shows the command that ran and a glossary when it has volume metrics.

Usage: check_page.py RUN [--screenshot PNG [--top PIXELS]] [--chromium PATH]
(--top: only the first PIXELS of the page in the screenshot; default the whole page)
Prints a JSON report; exits 1 when a check fails (each failure is listed), 2 on bad usage.
"""
import argparse
import json
import os
import sys
import urllib.parse

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
WIDTH = 1400


def local_target(run, href):
    """The file a relative link points to, or None for an anchor or an absolute URL."""
    if not href or href.startswith("#") or "://" in href or href.startswith("mailto:"):
        return None
    return os.path.join(run, urllib.parse.unquote(href.split("#")[0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--screenshot")
    ap.add_argument("--top", type=int)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    page_path = os.path.abspath(os.path.join(a.run, "index.html"))
    if not os.path.isfile(page_path):
        print(f"check_page: {page_path} does not exist", file=sys.stderr)
        return 2
    if not os.path.isfile(a.chromium):
        print(f"check_page: no Chromium at {a.chromium} (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    failures, console = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
        page.on("console", lambda m: console.append({"type": m.type, "text": m.text}))
        page.on("pageerror", lambda e: failures.append(f"script error: {e}"))
        page.on("requestfailed", lambda r: failures.append(f"request failed: {r.url} ({r.failure})"))
        page.goto("file://" + page_path, wait_until="load")
        # Lazy images load when scrolled to: scroll the whole page, then wait for every image.
        page.evaluate("""async () => {
            for (const img of document.images) { img.loading = 'eager'; }
            await Promise.all(Array.from(document.images).map(img => img.decode().catch(() => null)));
        }""")
        images = page.evaluate("""() => Array.from(document.images).map(img => ({
            src: img.getAttribute('src'), complete: img.complete, natural: img.naturalWidth,
            naturalHeight: img.naturalHeight, shown: img.getBoundingClientRect().width,
            page: document.documentElement.clientWidth}))""")
        links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
        text = page.evaluate("() => document.body.innerText")
        has_metrics = page.evaluate("() => !!Array.from(document.querySelectorAll('h2')).find(h => h.textContent === 'Metrics')")
        if a.screenshot:
            if a.top:
                page.screenshot(path=a.screenshot, full_page=True,
                                clip={"x": 0, "y": 0, "width": WIDTH, "height": a.top})
            else:
                page.screenshot(path=a.screenshot, full_page=True)
        browser.close()

    for m in console:
        if m["type"] in ("error", "warning"):
            failures.append(f"console {m['type']}: {m['text']}")
    for img in images:
        if not img["complete"] or img["natural"] == 0:
            failures.append(f"image {img['src']} did not load or decode")
            continue
        room = img["page"] - 60  # the body's margins and the border
        if img["shown"] < 0.95 * min(img["natural"], room):
            failures.append(f"image {img['src']} drawn {img['natural']} px wide is shown at {img['shown']:.0f} px")
    missing = sorted({h for h in links if (t := local_target(a.run, h)) and not os.path.exists(t)})
    failures += [f"link to a missing file: {h}" for h in missing]
    if "The command that ran" not in text:
        failures.append("the page does not show the command that ran")
    if has_metrics and "Glossary" not in text:
        failures.append("a page with metrics has no glossary")
    report = {
        "page": page_path,
        "images": len(images),
        "links": len(links),
        "console_messages": console,
        "smallest_shown_fraction": min((i["shown"] / i["natural"] for i in images if i["natural"]), default=None),
        "failures": failures,
    }
    print(json.dumps(report, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
