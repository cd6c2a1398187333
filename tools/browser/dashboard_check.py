"""Two headless browsers on the dashboard's page of one running job.

Browser B only watches. Browser A first tries an action without logging in, then logs in,
cancels the job from its page and retries it. B must see each change pushed (server-sent
events, no polling) and within a second of A's click. Prints what it saw as JSON; the
Swift test (Tests/IntegrationTests/DashboardActionTests.swift) judges it.

  python dashboard_check.py --chromium /usr/bin/chromium --base http://127.0.0.1:9464 --job 1 \
      --user ops --password secret
"""

import argparse
import json
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from cdp import Browser  # noqa: E402

STATE = "document.getElementById('job-state') && document.getElementById('job-state').dataset.state"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chromium", required=True)
    p.add_argument("--base", required=True, help="the dashboard's address, http://HOST:PORT")
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    a = p.parse_args()
    page = f"{a.base}/jobs/{a.job}"
    seen = {}
    A, B = Browser(a.chromium), Browser(a.chromium)
    try:
        B.navigate(page)
        seen["b_initial_state"] = B.wait_for(STATE, what="the job page in B")
        # Every change B's page records, with the time it saw it.
        B.evaluate("""(() => { window.seenStates = [];
            new MutationObserver(() => window.seenStates.push([document.getElementById('job-state').dataset.state, Date.now()]))
              .observe(document.getElementById('job-state'), {attributes: true, childList: true, subtree: true, characterData: true});
            return true; })()""")

        # Without logging in, the page's action is refused by the server.
        A.navigate(page)
        A.wait_for(STATE, what="the job page in A")
        seen["unauthenticated_status"] = A.evaluate(
            f"fetch('/api/jobs/{a.job}/cancel', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{}}'}})"
            ".then(r => r.status)")

        # Log in through the form.
        A.navigate(f"{a.base}/login?next=/jobs/{a.job}")
        A.wait_for("document.getElementById('user') && document.getElementById('next').value", what="the login form")
        A.evaluate(f"""(() => {{ document.getElementById('user').value = {json.dumps(a.user)};
            document.getElementById('password').value = {json.dumps(a.password)};
            document.getElementById('submit').click(); return true; }})()""")
        A.wait_for(f"location.pathname === '/jobs/{a.job}' && {STATE}", what="the job page after logging in")
        seen["a_session"] = A.wait_for("fetch('/api/session').then(r => r.json()).then(s => s.user)", what="a session")

        def act(button, wanted):
            clicked = A.evaluate(f"(() => {{ document.getElementById('{button}').click(); return Date.now(); }})()")
            A.wait_for(f"{json.dumps(wanted)}.includes({STATE})", what=f"A's page after {button}")
            at = B.wait_for(f"(window.seenStates.find(s => {json.dumps(wanted)}.includes(s[0])) || [null, 0])[1]",
                            timeout=10, what=f"B seeing {wanted}")
            return at - clicked

        seen["cancel_seen_after_ms"] = act("cancel", ["cancelled"])
        seen["b_state_after_cancel"] = B.evaluate(STATE)
        seen["retry_seen_after_ms"] = act("retry", ["queued", "planning", "running", "personalising"])
        seen["b_state_after_retry"] = B.evaluate(STATE)
        # B never asked for the farm's state on a timer: its updates came down the stream.
        seen["b_farm_requests"] = B.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/farm')).length")
        seen["b_stream_updates"] = B.evaluate("window.dubfarmUpdates")
        seen["b_states"] = [s for s, _ in B.evaluate("window.seenStates")]
    finally:
        A.close()
        B.close()
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
