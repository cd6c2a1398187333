import Crypto
import DubfarmCore
import FarmProtocol
import Foundation
import ZeroMQ

/// The CLI's connection to a coordinator's control endpoint.
///
/// Synchronous and single-threaded by design: it owns one DEALER socket and is used from the
/// thread that created it (the CLI's main thread), never from Swift's cooperative pool.
package final class ControlClient {
    package let endpoint: String
    /// Seconds to wait for an answer before the coordinator counts as unreachable.
    package var timeout: Double
    let socket: ZMQSocket
    /// Handshake outcomes, so a refused key is reported at once instead of as a timeout.
    let monitor: ZMQSocketMonitor
    /// This client's CURVE public key, when CURVE is on.
    package let publicKey: String?
    var nextID: UInt64 = 1

    /// Connects to `endpoint`; with `curve`, encrypted and authenticated by this client's key pair
    /// against the coordinator's public key `serverKey`.
    package init(endpoint: String, timeout: Double = 10, curve: (serverKey: String, keys: CurveKeyPair)? = nil) throws {
        self.endpoint = endpoint
        self.timeout = timeout
        publicKey = curve?.keys.publicKey
        do {
            socket = try ZMQSocket(.dealer)
            try socket.setMaxMessageSize(1 << 30)
            if let curve {
                try socket.setCurveClient(serverKey: curve.serverKey, publicKey: curve.keys.publicKey, secretKey: curve.keys.secretKey)
            }
            monitor = try ZMQSocketMonitor(socket)
            try socket.connect(endpoint)
        } catch {
            throw DubfarmError(.unreachable, "cannot connect to the coordinator at \(endpoint): \(error)")
        }
    }

    /// Sends one request and waits for its reply; coordinator errors are thrown as they came.
    @discardableResult
    package func call(_ request: ControlRequest) throws -> ControlReply {
        let id = try send(request)
        let reply = try receive(id: id)
        if case .failure(let e) = reply.outcome { throw e }
        return reply
    }

    /// Sends one request and decodes its reply's value.
    package func call<T: Decodable>(_ request: ControlRequest, as type: T.Type) throws -> T {
        try call(request).value(type)
    }

    func send(_ request: ControlRequest) throws -> UInt64 {
        let id = nextID
        nextID += 1
        do { _ = try socket.send(request.encode(requestID: id), wait: true) } catch {
            throw DubfarmError(.unreachable, "cannot send to the coordinator at \(endpoint): \(error)")
        }
        return id
    }

    func receive(id: UInt64) throws -> ControlReply {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var poller = ZMQPoller([.socket(socket), .socket(monitor.socket)])
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else {
                throw DubfarmError(.unreachable, "the coordinator at \(endpoint) did not answer within \(Int(timeout)) s; is it running? (start one with `dubfarm coordinator` or `dubfarm local up`)")
            }
            let ms = Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
            _ = try poller.poll(timeoutMilliseconds: max(1, ms))
            while let event = try monitor.next() { try check(event) }
            while let frames = try socket.receive() {
                let reply = try ControlReply.decode(frames)
                if reply.requestID == id { return reply }
                // A late reply to an earlier request that timed out: ignore it.
            }
        }
    }

    /// Turns a failed security handshake into an error that says what to fix.
    func check(_ event: ZMQSocketEvent) throws {
        if event.isAuthenticationFailure {
            let key = publicKey.map { " (public key \($0.prefix(8))…)" } ?? ""
            throw DubfarmError(.unreachable, """
                the coordinator at \(endpoint) refused this client's key\(key): it is not in the coordinator's \
                security.authorized_clients; copy this client's public key file (NAME.key from `dubfarm keys generate`) there
                """)
        }
        if event.isProtocolFailure {
            throw DubfarmError(.unreachable, publicKey == nil
                ? "the security handshake with the coordinator at \(endpoint) failed: it probably requires CURVE; pass --key-file and --server-key (or set DUBFARM_KEY_FILE and DUBFARM_SERVER_KEY)"
                : "the security handshake with the coordinator at \(endpoint) failed: check --server-key (the coordinator's public key) and that the coordinator has CURVE on")
        }
    }

    // MARK: Uploads and downloads

    /// Upload payload bytes this client has sent (what crossed the wire for uploads).
    package private(set) var uploadBytesSent: Int64 = 0

    /// Uploads a file in checksummed chunks (several in flight); returns its upload id (its
    /// SHA-256). The coordinator keeps files by content: one it holds already is not sent again,
    /// and one whose upload was cut off goes on from where it stopped.
    package func upload(path: String, progress: (Int64, Int64) -> Void = { _, _ in }) throws -> String {
        let url = URL(fileURLWithPath: path)
        guard let handle = try? FileHandle(forReadingFrom: url) else {
            throw DubfarmError(.localFile, "\(path): cannot open the file for reading")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            size += Int64(chunk.count)
        }
        let digest = hex(hasher.finalize())

        let started = try call(.uploadBegin(UploadBegin(name: url.lastPathComponent, size: size, sha256: digest)), as: UploadStarted.self)
        if started.complete == true {
            progress(size, size)
            return started.id
        }
        var offset = min(max(started.received ?? 0, 0), size)
        try handle.seek(toOffset: UInt64(offset))
        let window = 4
        var inFlight: [UInt64] = []
        while offset < size || !inFlight.isEmpty {
            while offset < size && inFlight.count < window {
                let data = try handle.read(upToCount: started.chunkSize) ?? Data()
                guard !data.isEmpty else {
                    throw DubfarmError(.localFile, "\(path): the file shrank while it was being uploaded")
                }
                inFlight.append(try send(.uploadChunk(id: started.id, offset: offset, data: Array(data))))
                offset += Int64(data.count)
                uploadBytesSent += Int64(data.count)
            }
            let reply = try receive(id: inFlight.removeFirst())
            let status = try reply.value(UploadStatus.self)
            progress(status.received, size)
        }
        let done = try call(.uploadEnd(id: started.id), as: UploadStatus.self)
        guard done.sha256 == digest else {
            throw DubfarmError(.io, "\(path): checksum mismatch after upload (sent \(digest), coordinator has \(done.sha256 ?? "none"))")
        }
        return started.id
    }

    /// Downloads a job's output to `path` (temporary name, fsync, rename) and verifies its checksum.
    package func download(job: Int64, to path: String, progress: (Int64, Int64) -> Void = { _, _ in }) throws {
        let dest = URL(fileURLWithPath: path)
        let tmp = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).part-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil),
              let out = try? FileHandle(forWritingTo: tmp) else {
            throw DubfarmError(.localFile, "\(path): cannot create the file (does the directory exist and is it writable?)")
        }
        var ok = false
        defer {
            try? out.close()
            if !ok { try? FileManager.default.removeItem(at: tmp) }
        }
        var hasher = SHA256()
        var offset: Int64 = 0
        var total: Int64 = -1
        var expected = ""
        let chunk = 4 << 20
        repeat {
            let reply = try call(.fetch(FetchRequest(job: job, offset: offset, length: chunk)))
            let head = try reply.value(FetchChunk.self)
            let data = reply.payload ?? []
            total = head.total
            expected = head.sha256
            hasher.update(data: data)
            do { try out.write(contentsOf: data) } catch {
                throw DubfarmError(.localFile, "\(path): write failed: \(error.localizedDescription)")
            }
            offset += Int64(data.count)
            progress(offset, total)
            if data.isEmpty && offset < total { throw DubfarmError(.io, "job \(job): the coordinator sent an empty chunk at \(offset)") }
        } while offset < total
        do { try out.synchronize() } catch {
            throw DubfarmError(.localFile, "\(path): cannot flush the file to disk: \(error.localizedDescription)")
        }
        guard hex(hasher.finalize()) == expected else {
            throw DubfarmError(.io, "job \(job): the downloaded output does not match its checksum; try again")
        }
        try? FileManager.default.removeItem(at: dest)
        do { try FileManager.default.moveItem(at: tmp, to: dest) } catch {
            throw DubfarmError(.localFile, "\(path): cannot move the finished download into place: \(error.localizedDescription)")
        }
        ok = true
    }
}

func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    digest.map { String(format: "%02x", $0) }.joined()
}
