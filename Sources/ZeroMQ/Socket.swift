import CZeroMQ
import Glibc

/// A ZeroMQ failure: the call that failed and libzmq's reason.
package struct ZMQError: Error, Sendable, CustomStringConvertible {
    package let errno: Int32
    package let operation: String
    package var description: String { "\(operation): \(String(cString: zmq_strerror(errno)))" }
    /// The peer is unknown or gone (ROUTER_MANDATORY).
    package var isHostUnreachable: Bool { errno == EHOSTUNREACH }
    init(_ operation: String, errno: Int32 = zmq_errno()) {
        self.operation = operation
        self.errno = errno
    }
}

/// A ZeroMQ context. One per process is enough; sockets keep it alive.
package final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// The process-wide context.
    package static let shared = ZMQContext()

    package init() {
        handle = zmq_ctx_new()
        zmq_ctx_set(handle, ZMQ_BLOCKY, 0)
    }

    deinit { zmq_ctx_term(handle) }
}

/// A ZeroMQ socket. Not thread-safe: exactly one thread owns and uses it.
package final class ZMQSocket {
    package enum Kind: Sendable {
        case router, dealer, pair, push, pull, req, rep
        var raw: Int32 {
            switch self {
            case .router: return ZMQ_ROUTER
            case .dealer: return ZMQ_DEALER
            case .pair: return ZMQ_PAIR
            case .push: return ZMQ_PUSH
            case .pull: return ZMQ_PULL
            case .req: return ZMQ_REQ
            case .rep: return ZMQ_REP
            }
        }
    }

    let handle: UnsafeMutableRawPointer
    let context: ZMQContext
    package let kind: Kind

    package init(_ kind: Kind, context: ZMQContext = .shared) throws {
        guard let h = zmq_socket(context.handle, kind.raw) else { throw ZMQError("zmq_socket") }
        handle = h
        self.kind = kind
        self.context = context
        try set(ZMQ_LINGER, Int32(0))
    }

    deinit { zmq_close(handle) }

    // MARK: Endpoints

    package func bind(_ endpoint: String) throws {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError("bind \(endpoint)") }
    }
    package func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError("connect \(endpoint)") }
    }
    package func unbind(_ endpoint: String) throws {
        guard zmq_unbind(handle, endpoint) == 0 else { throw ZMQError("unbind \(endpoint)") }
    }
    /// The endpoint last bound (with the real port after binding to `:*` or port 0).
    package var lastEndpoint: String {
        var buf = [CChar](repeating: 0, count: 512)
        var len = buf.count
        _ = zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buf, &len)
        return String(cString: buf)
    }

    // MARK: Options

    /// ROUTER: report unroutable messages as errors instead of dropping them silently.
    package func setRouterMandatory(_ on: Bool) throws { try set(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0)) }
    /// ROUTER: a new peer with an existing routing id takes that id over (a reconnecting worker).
    package func setRouterHandover(_ on: Bool) throws { try set(ZMQ_ROUTER_HANDOVER, Int32(on ? 1 : 0)) }
    package func setRoutingID(_ id: [UInt8]) throws { try setBytes(ZMQ_ROUTING_ID, id) }
    package func setLinger(milliseconds: Int) throws { try set(ZMQ_LINGER, Int32(milliseconds)) }
    package func setSendHighWaterMark(_ n: Int) throws { try set(ZMQ_SNDHWM, Int32(n)) }
    package func setReceiveHighWaterMark(_ n: Int) throws { try set(ZMQ_RCVHWM, Int32(n)) }
    /// Messages larger than this are refused by libzmq before they are allocated; the peer is disconnected.
    package func setMaxMessageSize(_ bytes: Int64) throws {
        var v = bytes
        guard zmq_setsockopt(handle, ZMQ_MAXMSGSIZE, &v, MemoryLayout<Int64>.size) == 0 else {
            throw ZMQError("setsockopt ZMQ_MAXMSGSIZE")
        }
    }
    /// Queue messages only to completed connections.
    package func setImmediate(_ on: Bool) throws { try set(ZMQ_IMMEDIATE, Int32(on ? 1 : 0)) }
    package func setReconnectInterval(milliseconds: Int, max: Int) throws {
        try set(ZMQ_RECONNECT_IVL, Int32(milliseconds))
        try set(ZMQ_RECONNECT_IVL_MAX, Int32(max))
    }
    /// Makes this socket a CURVE server with the given secret key (Z85, 40 characters).
    package func setCurveServer(secretKey: String) throws {
        try set(ZMQ_CURVE_SERVER, Int32(1))
        try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8))
    }
    /// Makes this socket a CURVE client of `serverKey` with its own key pair (all Z85).
    package func setCurveClient(serverKey: String, publicKey: String, secretKey: String) throws {
        try setBytes(ZMQ_CURVE_SERVERKEY, Array(serverKey.utf8))
        try setBytes(ZMQ_CURVE_PUBLICKEY, Array(publicKey.utf8))
        try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8))
    }
    /// The ZAP domain authentication requests from this socket carry.
    package func setZAPDomain(_ domain: String) throws { try setBytes(ZMQ_ZAP_DOMAIN, Array(domain.utf8)) }

    private func set(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) == 0 else {
            throw ZMQError("setsockopt \(option)")
        }
    }
    private func setBytes(_ option: Int32, _ value: [UInt8]) throws {
        let rc = value.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError("setsockopt \(option)") }
    }

    // MARK: Messages

    /// Sends a multipart message. Returns `false` if it would block and `wait` is false.
    @discardableResult
    package func send(_ frames: [[UInt8]], wait: Bool = false) throws -> Bool {
        precondition(!frames.isEmpty, "a message has at least one frame")
        for (i, f) in frames.enumerated() {
            var flags: Int32 = i < frames.count - 1 ? ZMQ_SNDMORE : 0
            if !wait { flags |= ZMQ_DONTWAIT }
            while true {
                let rc = f.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EAGAIN && i == 0 { return false }
                throw ZMQError("send", errno: e)
            }
        }
        return true
    }

    /// Receives one whole multipart message, or `nil` when none is waiting and `wait` is false.
    package func receive(wait: Bool = false) throws -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let rc = zmq_msg_recv(&msg, handle, wait || !frames.isEmpty ? 0 : ZMQ_DONTWAIT)
            if rc < 0 {
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError("receive", errno: e)
            }
            let size = zmq_msg_size(&msg)
            if size == 0 {
                frames.append([])
            } else {
                let data = zmq_msg_data(&msg)!
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }
}

/// Waits on several sockets and file descriptors at once.
package struct ZMQPoller {
    package enum Item {
        case socket(ZMQSocket)
        /// A plain file descriptor (an ``EventSignal``'s, say), readable.
        case fd(Int32)
    }

    private var items: [zmq_pollitem_t] = []

    package init(_ entries: [Item]) {
        items = entries.map { e in
            switch e {
            case .socket(let s): return zmq_pollitem_t(socket: s.handle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0)
            case .fd(let fd): return zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0)
            }
        }
    }

    /// Blocks up to `timeoutMilliseconds` (-1: forever); returns which items are readable.
    package mutating func poll(timeoutMilliseconds: Int) throws -> [Bool] {
        let n = items.count
        let rc = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32(n), timeoutMilliseconds) }
        if rc < 0 {
            if zmq_errno() == EINTR { return [Bool](repeating: false, count: n) }
            throw ZMQError("poll")
        }
        return items.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 }
    }
}

/// A CURVE key pair in Z85 text (40 characters each).
package struct CurveKeyPair: Sendable, Hashable, Codable {
    package let publicKey: String
    package let secretKey: String

    package init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh key pair from libzmq's CURVE implementation.
    package static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    /// The public key belonging to a secret key.
    package static func publicKey(forSecret secret: String) throws -> String {
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { throw ZMQError("zmq_curve_public") }
        return String(cString: pub)
    }
}

/// libzmq's version, e.g. "4.3.4".
package var zmqVersion: String {
    var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
    zmq_version(&a, &b, &c)
    return "\(a).\(b).\(c)"
}
