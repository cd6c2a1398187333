import CZeroMQ
import Foundation
import Glibc
import Synchronization

// MARK: Z85

/// Z85 text encoding of binary keys (ZeroMQ RFC 32), as libzmq implements it.
package enum Z85 {
    /// Encodes `bytes` (a multiple of 4 bytes long) as Z85 text.
    package static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count % 4 == 0 else { return nil }
        var out = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        guard zmq_z85_encode(&out, bytes, bytes.count) != nil else { return nil }
        return String(cString: out)
    }

    /// Decodes Z85 text (a multiple of 5 characters long); `nil` when it is not valid Z85.
    package static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 5 == 0, chars.allSatisfy({ alphabet.contains($0) }) else { return nil }
        var out = [UInt8](repeating: 0, count: chars.count * 4 / 5)
        guard zmq_z85_decode(&out, text) != nil else { return nil }
        return out
    }

    static let alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
}

// MARK: Socket monitor

/// A socket event reported by libzmq's socket monitor (connection, handshake and authentication
/// outcomes).
package struct ZMQSocketEvent: Sendable, Hashable {
    package let event: Int32
    /// The event's value: for handshake failures, the errno or the ZAP status code (400 = refused).
    package let value: Int32
    /// The endpoint the event concerns.
    package let address: String

    /// The peer's ZAP handler refused our key (status 400) — or, seen from a server, it refused a peer.
    package var isAuthenticationFailure: Bool { event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH }
    /// The security handshake failed for a protocol reason (e.g. a plaintext peer on a CURVE socket).
    package var isProtocolFailure: Bool {
        event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
    }
    package var isHandshakeSucceeded: Bool { event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED }

    /// The handshake outcome events: succeeded, failed by protocol, failed by authentication.
    package static let handshakeEvents: Int32 = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
}

/// The receiving end of a ZeroMQ socket monitor: a PAIR socket that the monitored socket's
/// events arrive on. Owned by the same thread as the socket it monitors; poll ``socket``.
package final class ZMQSocketMonitor {
    package let socket: ZMQSocket
    private static let counter = Atomic<Int>(0)

    /// Starts monitoring `target` for `events` (a mask of `ZMQ_EVENT_…`).
    package init(_ target: ZMQSocket, events: Int32 = ZMQSocketEvent.handshakeEvents) throws {
        let n = Self.counter.add(1, ordering: .relaxed).newValue
        let address = "inproc://dubfarm-monitor-\(getpid())-\(n)"
        guard zmq_socket_monitor(target.handle, address, events) == 0 else { throw ZMQError("zmq_socket_monitor") }
        socket = try ZMQSocket(.pair, context: target.context)
        try socket.connect(address)
    }

    /// The next event, or `nil` when none is waiting.
    package func next() throws -> ZMQSocketEvent? {
        guard let frames = try socket.receive(), frames.count >= 2, frames[0].count >= 6 else { return nil }
        let f = frames[0]
        let event = Int32(f[0]) | Int32(f[1]) << 8
        let value = Int32(bitPattern: UInt32(f[2]) | UInt32(f[3]) << 8 | UInt32(f[4]) << 16 | UInt32(f[5]) << 24)
        return ZMQSocketEvent(event: event, value: value, address: String(decoding: frames[1], as: UTF8.self))
    }
}

// MARK: ZAP

/// One ZAP authentication request (ZeroMQ RFC 27), as libzmq sends it for a connecting peer.
package struct ZAPRequest: Sendable, Hashable {
    /// The ZAP domain of the server socket (`ZMQ_ZAP_DOMAIN`).
    package let domain: String
    /// The peer's IP address.
    package let address: String
    /// `NULL`, `PLAIN` or `CURVE`.
    package let mechanism: String
    /// For CURVE, the client's long-term public key in Z85.
    package let curvePublicKey: String?
}

/// What a ZAP handler answers.
package struct ZAPDecision: Sendable, Hashable {
    package let allowed: Bool
    /// Status text sent back (and shown to the refused peer by libzmq's events).
    package let reason: String
    /// The user id attached to the admitted peer's messages.
    package let userID: String

    package static func allow(userID: String = "") -> ZAPDecision { ZAPDecision(allowed: true, reason: "OK", userID: userID) }
    package static func deny(_ reason: String) -> ZAPDecision { ZAPDecision(allowed: false, reason: reason, userID: "") }
}

/// A ZAP handler: a thread of its own with a REP socket bound to `inproc://zeromq.zap.01` in a
/// context, answering every authentication request of that context's server sockets with
/// `decide`. Start it before the sockets it guards bind; libzmq then refuses every peer it
/// denies during the security handshake, before any message of theirs is delivered.
package final class ZAPHandler: Sendable {
    package static let endpoint = "inproc://zeromq.zap.01"
    let decide: @Sendable (ZAPRequest) -> ZAPDecision
    let stopSignal = EventSignal()
    let stopped = Atomic<Bool>(false)
    let finished = DispatchSemaphore(value: 0)

    package init(decide: @escaping @Sendable (ZAPRequest) -> ZAPDecision) {
        self.decide = decide
    }

    /// Binds the handler's socket in `context` and starts its thread; throws when it cannot bind
    /// (another handler already serves this context).
    package func start(context: ZMQContext = .shared) throws {
        let result = Mutex<Result<Void, ZMQError>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            let socket: ZMQSocket
            do {
                socket = try ZMQSocket(.rep, context: context)
                try socket.bind(Self.endpoint)
                result.withLock { $0 = .success(()) }
            } catch let e as ZMQError {
                result.withLock { $0 = .failure(e) }
                ready.signal()
                finished.signal()
                return
            } catch {
                result.withLock { $0 = .failure(ZMQError("zap handler")) }
                ready.signal()
                finished.signal()
                return
            }
            ready.signal()
            serve(socket)
            finished.signal()
        }
        thread.name = "zmq-zap"
        thread.start()
        ready.wait()
        try result.withLock { $0! }.get()
    }

    /// Stops the thread and unbinds; returns once it has.
    package func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        stopSignal.raise()
        finished.wait()
    }

    private func serve(_ socket: ZMQSocket) {
        var poller = ZMQPoller([.socket(socket), .fd(stopSignal.fd)])
        while !stopped.load(ordering: .relaxed) {
            guard let ready = try? poller.poll(timeoutMilliseconds: 1000), ready[0] else { continue }
            while let frames = try? socket.receive() {
                _ = try? socket.send(Self.answer(frames, decide: decide), wait: true)
            }
        }
        try? socket.unbind(Self.endpoint)
    }

    /// The reply frames for one request's frames (RFC 27): version, request id, status code,
    /// status text, user id, metadata. Malformed requests get status 500.
    static func answer(_ f: [[UInt8]], decide: (ZAPRequest) -> ZAPDecision) -> [[UInt8]] {
        func reply(_ code: String, _ text: String, _ user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), f.count > 1 ? f[1] : [], Array(code.utf8), Array(text.utf8), Array(user.utf8), []]
        }
        guard f.count >= 6, String(decoding: f[0], as: UTF8.self) == "1.0" else { return reply("500", "malformed ZAP request") }
        let mechanism = String(decoding: f[5], as: UTF8.self)
        var key: String?
        if mechanism == "CURVE" {
            guard f.count >= 7, f[6].count == 32, let z = Z85.encode(f[6]) else { return reply("500", "malformed CURVE credentials") }
            key = z
        }
        let request = ZAPRequest(domain: String(decoding: f[2], as: UTF8.self), address: String(decoding: f[3], as: UTF8.self),
                                 mechanism: mechanism, curvePublicKey: key)
        let d = decide(request)
        return d.allowed ? reply("200", "OK", d.userID) : reply("400", d.reason)
    }
}
