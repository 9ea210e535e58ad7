"""A framework written against mesoshttp 0.4.2 (a published Mesos v1 client), unchanged.

mesoshttp handles a RecordIO event only when the next record's length arrives, so this also
checks that the master follows every batch of events with a HEARTBEAT: with the 2 s heartbeat the
test master uses, the whole run would otherwise crawl.
Usage: mesoshttp_framework.py http://MASTER_HOST:PORT [PRINCIPAL SECRET]
With a principal and secret it authenticates as Mesos's HTTP authentication expects, through
mesoshttp's own hooks: `set_credentials` (the principal in FrameworkInfo) and `requests_auth`
(HTTP basic on every call; mesoshttp's `set_credentials` alone only puts them in the body).
"""
import sys
import threading
import time

from mesoshttp.client import MesosClient
from requests.auth import HTTPBasicAuth

seen = {}
done = threading.Event()


def task(agent_id, task_id, command):
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": agent_id},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
        ],
        "command": {"value": command},
    }


class Compat:
    def __init__(self, url, principal=None, secret=None):
        self.driver = None
        self.launched = False
        self.client = MesosClient(mesos_urls=[url], frameworkName="mesoshttp-compat")
        if principal:
            self.client.set_credentials(principal, secret)
            self.client.requests_auth = HTTPBasicAuth(principal, secret)
        self.client.on(MesosClient.SUBSCRIBED, self.subscribed)
        self.client.on(MesosClient.OFFERS, self.offers)
        self.client.on(MesosClient.UPDATE, self.update)

    def subscribed(self, driver):
        self.driver = driver

    def offers(self, offers):
        for offer in offers:
            if self.launched:
                offer.decline()
                continue
            self.launched = True
            agent = offer.get_offer()["agent_id"]["value"]
            offer.accept([task(agent, "mh-finish", "echo hello-mesoshttp; sleep 1"),
                          task(agent, "mh-kill", "sleep 300")])

    def update(self, update):
        status = update["status"]
        task_id, state = status["task_id"]["value"], status["state"]
        print("UPDATE", task_id, state, flush=True)
        # A task in its own container network says where it is (Mesos's ContainerStatus).
        for n in (status.get("container_status") or {}).get("network_infos") or []:
            for a in n.get("ip_addresses") or []:
                print("ADDRESS", task_id, a.get("ip_address"), flush=True)
        seen.setdefault(task_id, []).append(state)
        if task_id == "mh-kill" and state == "TASK_RUNNING":
            self.driver.kill(status["agent_id"]["value"], task_id)
        if "TASK_FINISHED" in seen.get("mh-finish", []) and "TASK_KILLED" in seen.get("mh-kill", []):
            done.set()
            self.client.stop = True


def main():
    compat = Compat(*sys.argv[1:4])
    started = time.time()
    thread = threading.Thread(target=compat.client.register, daemon=True)
    thread.start()
    ok = done.wait(60)
    if compat.driver is not None:
        compat.driver.tearDown()
    print("RESULT", "ok" if ok else "timeout", round(time.time() - started, 2), seen, flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
