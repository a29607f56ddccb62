"""A real HTTP server (Python's http.server) standing in for a webhook target.

Usage: webhook_server.py PORT PLAN LOG
  PLAN: comma-separated statuses for the first POSTs (e.g. "503,503"); later POSTs get 200,
        except a body containing REJECT-ME, which gets 400 "unknown customer".
  LOG:  every POST is appended as a JSON line {"status": ..., "body": <parsed JSON body>}.
Prints "ready" once listening. Runs until killed.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, plan, log_path = int(sys.argv[1]), [int(s) for s in sys.argv[2].split(",") if s], sys.argv[3]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if b"REJECT-ME" in body:
            status, reply = 400, b"unknown customer"
        elif plan:
            status, reply = plan.pop(0), b"try later"
        else:
            status, reply = 200, b"ok"
        with open(log_path, "a") as f:
            f.write(json.dumps({"status": status, "body": json.loads(body)}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Hook)
print("ready", flush=True)
server.serve_forever()
