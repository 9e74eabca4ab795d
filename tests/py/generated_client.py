"""Drives sshq through a client generated from its served OpenAPI document by
openapi-python-client (PyPI), which knows nothing of sshq but the document.

Usage: generated_client.py CLIENT_DIR BASE_URL API_KEY DEVICE_JSON
  CLIENT_DIR   the directory holding the generated `sshq_client` package
  DEVICE_JSON  {"name", "host", "port", "username", "host_key"} of a running sshd

Registers the device, runs a command on it and waits for the job, reads the job back with its
typed status enum, reads its output events and its recording as text, lists jobs and devices with typed query filters, and checks that errors
(404, 400 with `property`, 401) parse into the typed error model. Prints one JSON line with
what it saw; any failed check raises (non-zero exit, traceback on stderr).
"""
import json
import sys
import time
import uuid

client_dir, base_url, api_key, device_json = sys.argv[1:5]
sys.path.insert(0, client_dir)

from sshq_client import AuthenticatedClient, Client  # noqa: E402
from sshq_client.api.devices import get_device, list_devices, register_device  # noqa: E402
from sshq_client.api.exec_ import exec_command  # noqa: E402
from sshq_client.api.jobs import get_job, job_output, list_jobs  # noqa: E402
from sshq_client.api.sessions import session_recording  # noqa: E402
from sshq_client.models import (  # noqa: E402
    Accepted,
    Device,
    DevicePresence,
    DeviceStatus,
    Encoding,
    Error,
    ErrorCode,
    ExecRequest,
    Job,
    JobSortBy,
    JobStatus,
    Order,
    RegisterDevice,
)
from sshq_client.types import Unset  # noqa: E402


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def eventually(call, until, what):
    """Lists come from the read models, which follow the log a moment behind: ask again until
    `until(answer)` holds (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        answer = call()
        if answer.status_code == 200 and until(answer.parsed):
            return answer
        check(time.monotonic() < deadline, f"{what}: {answer.status_code} {answer.content!r}")
        time.sleep(0.2)


device = json.loads(device_json)
client = AuthenticatedClient(
    base_url=base_url,
    token=api_key,
    auth_header_name="X-API-Key",
    prefix="",
    raise_on_unexpected_status=True,
    timeout=60.0,
)
seen = {}

# Register a device: 201 with the typed Device, its status and presence enums.
registered = register_device.sync_detailed(
    client=client,
    body=RegisterDevice(
        name=device["name"],
        host=device["host"],
        port=device["port"],
        username=device["username"],
        host_key=device["host_key"],
    ),
)
check(registered.status_code == 201, f"register: {registered.status_code} {registered.content!r}")
check(isinstance(registered.parsed, Device), f"register parsed {registered.parsed!r}")
device_id = registered.parsed.id
check(isinstance(device_id, uuid.UUID), f"device id {device_id!r}")
check(registered.parsed.status is DeviceStatus.ACCEPTED, f"device status {registered.parsed.status!r}")
check(isinstance(registered.parsed.presence, DevicePresence), f"presence {registered.parsed.presence!r}")
seen["device_status"] = registered.parsed.status.value

# Run a command and wait for it: 200 with the finished Job (or 202, then poll).
answer = exec_command.sync_detailed(
    id=device_id,
    client=client,
    body=ExecRequest(command="echo generated-client"),
    wait=30,
)
check(answer.status_code in (200, 202), f"submit: {answer.status_code} {answer.content!r}")
if answer.status_code == 202:
    check(isinstance(answer.parsed, Accepted), f"accepted parsed {answer.parsed!r}")
    check(answer.parsed.status is JobStatus.QUEUED, f"accepted status {answer.parsed.status!r}")
    check(answer.headers.get("location") == answer.parsed.location, "Location header")
    job_id = answer.parsed.job_id
else:
    check(isinstance(answer.parsed, Job), f"job parsed {answer.parsed!r}")
    job_id = answer.parsed.job_id
seen["submit_status"] = answer.status_code

# Read it back until it ends; the status is the enum, not a string.
deadline = time.monotonic() + 60
while True:
    read = get_job.sync_detailed(id=job_id, client=client)
    check(read.status_code == 200, f"get job: {read.status_code} {read.content!r}")
    job = read.parsed
    check(isinstance(job, Job), f"job parsed {job!r}")
    check(isinstance(job.status, JobStatus), f"job status type {type(job.status)!r}")
    if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        break
    check(time.monotonic() < deadline, f"job still {job.status} after 60 s")
    time.sleep(0.2)
check(job.status is JobStatus.FINISHED, f"job ended as {job.status!r}: {job.error_message!r}")
check(job.exit_status == 0 and job.is_ok, f"exit {job.exit_status!r}")
check(job.stdout == "generated-client\n", f"stdout {job.stdout!r}")
check(job.device_id == device_id, "job's device")
seen["job_status"] = job.status.value
seen["stdout"] = job.stdout

# Its output as server-sent events (without `follow`: what the log holds, then `end`), read as
# the text the document says the stream is.
events = job_output.sync_detailed(id=job_id, client=client, encoding=Encoding.TEXT)
check(events.status_code == 200, f"output: {events.status_code} {events.content!r}")
check(events.headers.get("content-type", "").startswith("text/event-stream"), "an event stream")
check("event: stdout" in events.parsed and "generated-client" in events.parsed, events.parsed)
check(events.parsed.rstrip().split("\n\n")[-1].startswith("event: end"), events.parsed)
seen["output_events"] = events.parsed.count("event: ")

# Its session's recording, as asciicast v2 text (once the projector has stored the frames).
deadline = time.monotonic() + 30
while True:
    cast = session_recording.sync_detailed(id=job_id, client=client)
    if cast.status_code == 200:
        break
    check(cast.status_code == 404 and time.monotonic() < deadline, f"recording: {cast.status_code}")
    time.sleep(0.2)
header = json.loads(cast.parsed.split("\n", 1)[0])
check(header["version"] == 2, f"asciicast header {header!r}")
check("generated-client" in cast.parsed, cast.parsed)
seen["recording_version"] = header["version"]

# List jobs with typed filters: the finished job is there, and not among running ones.
listed = eventually(
    lambda: list_jobs.sync_detailed(
        client=client,
        device_id=device_id,
        status=JobStatus.FINISHED,
        sort_by=JobSortBy.REQUESTED_AT,
        order_by=Order.DESC,
        per_page=10,
    ),
    lambda jobs: len(jobs) > 0,
    "the finished job in the list",
)
check([j.job_id for j in listed.parsed] == [job_id], f"listed {listed.parsed!r}")
check(all(j.status is JobStatus.FINISHED for j in listed.parsed), "listed statuses")
check(listed.headers.get("x-total-count") == "1", f"total {listed.headers.get('x-total-count')!r}")
# A list leaves the output out: the generated model has it unset rather than null.
check(isinstance(listed.parsed[0].stdout, Unset), f"listed stdout {listed.parsed[0].stdout!r}")
running = list_jobs.sync_detailed(client=client, device_id=device_id, status=JobStatus.RUNNING)
check(running.status_code == 200 and running.parsed == [], f"running {running.content!r}")
seen["listed_jobs"] = len(listed.parsed)

# Devices filtered by the status enum.
eventually(
    lambda: list_devices.sync_detailed(client=client, status=DeviceStatus.ACCEPTED, per_page=100),
    lambda devices: device_id in [d.id for d in devices],
    "the device listed as accepted",
)
pending = list_devices.sync_detailed(client=client, status=DeviceStatus.PENDING)
check(device_id not in [d.id for d in pending.parsed], "the device is not listed as pending")

# Errors parse into the typed error model.
missing = get_job.sync_detailed(id=uuid.uuid4(), client=client)
check(missing.status_code == 404, f"missing job: {missing.status_code}")
check(isinstance(missing.parsed, Error), f"404 parsed {missing.parsed!r}")
check(missing.parsed.error_code is ErrorCode.NOT_FOUND, f"404 code {missing.parsed.error_code!r}")
missing_device = get_device.sync_detailed(id=uuid.uuid4(), client=client)
check(missing_device.status_code == 404, f"missing device: {missing_device.status_code}")
check(missing_device.parsed.error_code is ErrorCode.NOT_FOUND, "missing device code")
too_many = list_jobs.sync_detailed(client=client, per_page=1000)
check(too_many.status_code == 400, f"per_page=1000: {too_many.status_code}")
check(isinstance(too_many.parsed, Error), f"400 parsed {too_many.parsed!r}")
check(too_many.parsed.error_code is ErrorCode.VALUE_OUT_OF_BOUNDS, f"400 code {too_many.parsed.error_code!r}")
check(too_many.parsed.property_ == "per_page", f"400 property {too_many.parsed.property_!r}")
anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)
refused = list_jobs.sync_detailed(client=anonymous)
check(refused.status_code == 401, f"no key: {refused.status_code}")
check(refused.parsed.error_code is ErrorCode.UNAUTHENTICATED, "401 code")
seen["errors"] = [
    missing.parsed.error_code.value,
    too_many.parsed.error_code.value,
    refused.parsed.error_code.value,
]

print(json.dumps(seen, default=str))
