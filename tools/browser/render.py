"""Opens a page in headless Chromium, waits until it has drawn live data, and saves its DOM
and/or a screenshot.

A page that keeps a server-sent event stream open never lets Chromium's --dump-dom and
--virtual-time-budget finish (virtual time waits for the network); this drives a real browser
over the DevTools protocol instead. Used by the monitoring tests.

  python render.py --chromium /usr/bin/chromium --url http://127.0.0.1:9464/ --dom out.html \
      --screenshot out.png --width 1280 --height 800
"""

import argparse
import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cdp import Browser  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chromium", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--dom", help="write the page's HTML here")
    p.add_argument("--screenshot", help="write a PNG of the page here")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--ready", default="window.dubfarmUpdates > 0",
                   help="JavaScript that is true once the page has drawn (default: a pushed update arrived)")
    a = p.parse_args()
    b = Browser(a.chromium, width=a.width, height=a.height)
    try:
        b.call("Emulation.setDeviceMetricsOverride", width=a.width, height=a.height, deviceScaleFactor=1,
               mobile=a.width < 600)
        b.navigate(a.url)
        b.wait_for(a.ready, timeout=30, what="the page's first update")
        time.sleep(0.3)  # let the redraw settle
        if a.dom:
            with open(a.dom, "w") as f:
                f.write(b.evaluate("document.documentElement.outerHTML"))
        if a.screenshot:
            shot = b.call("Page.captureScreenshot", format="png")
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    finally:
        b.close()


if __name__ == "__main__":
    main()
