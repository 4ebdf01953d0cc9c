"""Protocol 2 of the guest agent (docs/guest.md §2.2), Python stdlib only: frames on a
connected socket (a QEMU agent.sock, or `vmsnap-agent --listen-unix PATH` on the host), and
the same frames as vmsnapd sends them over HTTP (docs/api.md, Exec).

    c = FrameConn(sock)
    c.hello()                                   # {"ok":true,"protocol":2,...}
    out, err, end = c.run([b"printf", b"%s", b"a b"])
    c.call({"op": "stat", "path": "/etc"})
"""
import json
import struct

MAGIC = 0xFB
HEADER = 12
FRAME_MAX = 65536
WINDOW = 256 * 1024
COST = 64  # credit a data frame costs beyond its bytes
MORE = 1

CALL, REPLY, ECHO, ECHO_REPLY = 0x01, 0x02, 0x03, 0x04
START, STDIN, STDIN_EOF, RESIZE, SIGNAL, CREDIT, CLOSE = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16
STARTED, STDOUT, STDERR, EXIT, ERROR = 0x20, 0x21, 0x22, 0x23, 0x24
EXEC, READ, WRITE = 1, 2, 3
TTY, WITH_STDIN, DETACH = 1, 2, 4


def header(ftype, stream, length, flags=0):
    return struct.pack("<BBHII", MAGIC, ftype, flags, stream, length)


def parse_header(h):
    magic, ftype, flags, stream, length = struct.unpack("<BBHII", h)
    if magic != MAGIC or length > FRAME_MAX:
        raise ValueError("not a frame header: %r" % h)
    return ftype, flags, stream, length


def start_payload(kind, argv=(), env=(), last=b"", flags=0, rows=0, cols=0, arg=0):
    """A START payload: kind, flags, rows, cols, argc, envc, arg, then NUL-ended strings."""
    b = lambda s: s if isinstance(s, bytes) else s.encode()
    fixed = struct.pack("<BBHHHHHI", kind, flags, rows, cols, len(argv), len(env), 0, arg)
    return fixed + b"".join(b(s) + b"\0" for s in list(argv) + list(env) + [last])


class FrameConn:
    """One connection to an agent: frames, with the line hello first."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.next_id = 1

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("the agent closed the connection")
            self.buf += chunk

    def _take(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def hello(self):
        self.sock.sendall(b'{"op":"hello"}\n')
        while b"\n" not in self.buf:
            self._fill(len(self.buf) + 1)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, ftype, stream, payload=b"", flags=0):
        self.sock.sendall(header(ftype, stream, len(payload), flags) + payload)

    def recv(self):
        ftype, flags, stream, length = parse_header(self._take(HEADER))
        return ftype, flags, stream, self._take(length)

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def call(self, request):
        sid = self.new_id()
        self.send(CALL, sid, json.dumps(request).encode())
        data = b""
        while True:
            ftype, flags, stream, payload = self.recv()
            if stream != sid:
                continue
            if ftype != REPLY:
                raise ValueError("answer of type 0x%02x to a CALL" % ftype)
            data += payload
            if not flags & MORE:
                return json.loads(data)

    def echo(self, payload):
        sid = self.new_id()
        self.send(ECHO, sid, payload)
        while True:
            ftype, _, stream, data = self.recv()
            if stream == sid and ftype == ECHO_REPLY:
                return data

    def start(self, payload):
        """Sends START; returns (stream id, the STARTED json) or raises on ERROR."""
        sid = self.new_id()
        self.send(START, sid, payload)
        while True:
            ftype, _, stream, data = self.recv()
            if stream != sid:
                continue
            if ftype == STARTED:
                return sid, json.loads(data)
            if ftype == ERROR:
                raise OSError(json.loads(data)["errno"], json.loads(data)["message"])
            raise ValueError("frame 0x%02x before STARTED" % ftype)

    def pump(self, sid, on_data=None, stdin=b"", send_eof=True):
        """Feeds stdin within the agent's credit, collects output (crediting it back), and
        returns (stdout, stderr, the EXIT json or the ERROR json with "error": True)."""
        out, err = [], []
        credit_in = WINDOW
        pos = 0
        eof_sent = not send_eof
        while True:
            while pos < len(stdin) and credit_in > COST:
                n = min(FRAME_MAX, credit_in - COST, len(stdin) - pos)
                self.send(STDIN, sid, stdin[pos:pos + n])
                pos += n
                credit_in -= n + COST
            if pos >= len(stdin) and not eof_sent:
                self.send(STDIN_EOF, sid)
                eof_sent = True
            ftype, _, stream, data = self.recv()
            if stream != sid:
                continue
            if ftype in (STDOUT, STDERR):
                if on_data:
                    on_data(ftype, data)
                else:
                    (out if ftype == STDOUT else err).append(data)
                self.send(CREDIT, sid, struct.pack("<I", len(data) + COST))
            elif ftype == CREDIT:
                credit_in += struct.unpack("<I", data)[0]
            elif ftype == EXIT:
                return b"".join(out), b"".join(err), json.loads(data)
            elif ftype == ERROR:
                end = json.loads(data)
                end["error"] = True
                return b"".join(out), b"".join(err), end

    def run(self, argv, stdin=None, env=(), cwd=b"", timeout_ms=0, on_data=None):
        flags = WITH_STDIN if stdin is not None else 0
        sid, started = self.start(start_payload(EXEC, argv, env, cwd, flags, arg=timeout_ms))
        out, err, end = self.pump(sid, on_data, stdin or b"", stdin is not None)
        end["pid"] = started["pid"]
        return out, err, end


def http_frames(data):
    """Splits a vmsnapd exec stream (the chunked body, decoded) into (type, payload)."""
    frames = []
    i = 0
    while i < len(data):
        ftype, _, _, length = parse_header(data[i:i + HEADER])
        frames.append((ftype, data[i + HEADER:i + HEADER + length]))
        i += HEADER + length
    return frames
