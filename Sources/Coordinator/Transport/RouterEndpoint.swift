import DubfarmCore
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// One ZeroMQ ROUTER socket and the OS thread that owns it.
///
/// Messages in arrive on ``inbound`` (identity and frames); messages out are posted with
/// ``send(to:_:)`` from any task and written by the owner thread. The socket is never touched
/// from anywhere else.
package final class RouterEndpoint: Sendable {
    package struct Inbound: Sendable {
        package let identity: [UInt8]
        package let frames: [[UInt8]]
    }
    struct Outbound: Sendable {
        let identity: [UInt8]
        let frames: [[UInt8]]
    }

    package struct Options: Sendable {
        package var maxMessageBytes: Int64
        /// CURVE server secret key (Z85) when encryption is on.
        package var curveSecretKey: String?
        /// ZAP domain for allow-list checks.
        package var zapDomain: String?
        /// Most messages waiting in ``inbound``; beyond it a message is not queued but answered at
        /// once with ``overflowReply`` (when that gives frames), so a flood cannot grow memory
        /// without bound. `nil`: unbounded.
        package var maxQueued: Int?
        /// The answer to a message refused because ``inbound`` is full (`nil`: drop it).
        package var overflowReply: (@Sendable ([[UInt8]]) -> [[UInt8]]?)?
        package init(maxMessageBytes: Int64, curveSecretKey: String? = nil, zapDomain: String? = nil,
                    maxQueued: Int? = nil, overflowReply: (@Sendable ([[UInt8]]) -> [[UInt8]]?)? = nil) {
            self.maxMessageBytes = maxMessageBytes
            self.curveSecretKey = curveSecretKey
            self.zapDomain = zapDomain
            self.maxQueued = maxQueued
            self.overflowReply = overflowReply
        }
    }

    package let name: String
    package let inbound: AsyncStream<Inbound>
    let continuation: AsyncStream<Inbound>.Continuation
    /// Messages refused because ``inbound`` was full.
    let overflowed = Atomic<Int>(0)
    let outbox = Mailbox<Outbound>()
    let stopSignal = EventSignal()
    let stopped = Atomic<Bool>(false)
    let bound = Mutex<String>("")
    let logger: Logger

    package init(name: String, logger: Logger, maxQueued: Int? = nil) {
        self.name = name
        self.logger = logger
        (inbound, continuation) = AsyncStream.makeStream(of: Inbound.self, bufferingPolicy: maxQueued.map { .bufferingOldest($0) } ?? .unbounded)
    }

    /// How many messages were refused because ``inbound`` was full.
    package var overflowCount: Int { overflowed.load(ordering: .relaxed) }

    /// The endpoint actually bound (real port when bound to port 0 or `*`).
    package var boundEndpoint: String { bound.withLock { $0 } }

    /// Binds `endpoint` on a new thread; returns once bound, or throws why it could not bind.
    package func start(endpoint: String, options: Options) throws {
        let result = Mutex<Result<Void, DubfarmError>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            nameCurrentThread("zmq-\(name)")
            let socket: ZMQSocket
            var monitor: ZMQSocketMonitor?
            do {
                socket = try ZMQSocket(.router)
                try socket.setRouterMandatory(true)
                try socket.setRouterHandover(true)
                try socket.setMaxMessageSize(options.maxMessageBytes)
                try socket.setSendHighWaterMark(100_000)
                try socket.setReceiveHighWaterMark(100_000)
                if let d = options.zapDomain { try socket.setZAPDomain(d) }
                if let key = options.curveSecretKey { try socket.setCurveServer(secretKey: key) }
                if options.curveSecretKey != nil { monitor = try ZMQSocketMonitor(socket) }
                try socket.bind(endpoint)
                bound.withLock { $0 = socket.lastEndpoint }
                result.withLock { $0 = .success(()) }
                ready.signal()
            } catch {
                result.withLock { $0 = .failure(DubfarmError(.configuration, "cannot bind the \(name) endpoint \(endpoint): \(error)")) }
                ready.signal()
                return
            }
            loop(socket, monitor: monitor, overflowReply: options.overflowReply)
        }
        thread.name = "zmq-\(name)"
        thread.start()
        ready.wait()
        try result.withLock { $0! }.get()
    }

    /// Queues a message for `identity`.
    package func send(to identity: [UInt8], _ frames: [[UInt8]]) {
        outbox.post(Outbound(identity: identity, frames: frames))
    }

    /// Closes the socket and ends ``inbound``.
    package func stop() {
        stopped.store(true, ordering: .relaxed)
        stopSignal.raise()
    }

    private func loop(_ socket: ZMQSocket, monitor: ZMQSocketMonitor?, overflowReply: (@Sendable ([[UInt8]]) -> [[UInt8]]?)?) {
        var poller = ZMQPoller([.socket(socket), .fd(outbox.signal.fd), .fd(stopSignal.fd)] + (monitor.map { [.socket($0.socket)] } ?? []))
        defer { continuation.finish() }
        while !stopped.load(ordering: .relaxed) {
            do {
                let ready = try poller.poll(timeoutMilliseconds: 1000)
                if ready[0] {
                    // Bounded batch so a flood on this socket still lets outbound traffic through.
                    var n = 0
                    while n < 256, let frames = try socket.receive() {
                        n += 1
                        guard frames.count >= 2 else { continue }
                        if case .dropped = continuation.yield(Inbound(identity: frames[0], frames: Array(frames.dropFirst()))) {
                            let n = overflowed.add(1, ordering: .relaxed).newValue
                            if n == 1 || n % 1000 == 0 { logger.warning("\(name): \(n) messages refused so far: the queue is full (a client is flooding)") }
                            if let reply = overflowReply?(Array(frames.dropFirst())) {
                                _ = try? socket.send([frames[0]] + reply)
                            }
                        }
                    }
                }
                if let monitor, ready.count > 3, ready[3] {
                    while let e = try monitor.next() {
                        // Refusals by key are logged by the ZAP handler; these never reached it.
                        guard e.isProtocolFailure else { continue }
                        logger.warning("\(name): refused a peer whose security handshake failed (a plaintext peer, or a wrong server key?)",
                                       metadata: ["peer": .string(e.address), "errno": .stringConvertible(e.value)])
                    }
                }
                for m in outbox.drain() {
                    do {
                        _ = try socket.send([m.identity] + m.frames)
                    } catch let e as ZMQError where e.isHostUnreachable {
                        logger.debug("\(name): peer is gone; message dropped")
                    }
                }
            } catch {
                logger.error("\(name) endpoint: \(error)")
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        // Flush what is queued before closing (graceful shutdown says goodbye to workers).
        for m in outbox.drain() { _ = try? socket.send([m.identity] + m.frames) }
        try? socket.setLinger(milliseconds: 500)
    }
}
