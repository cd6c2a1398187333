import DubfarmCore
import FarmProtocol
import Foundation
import Logging
import MediaPipeline
import Synchronization
import ZeroMQ

/// How a worker connects and behaves.
package struct WorkerOptions: Sendable {
    /// The coordinator's work endpoint, e.g. `tcp://render-01:5555`.
    package var endpoint: String
    package var name: String
    package var threads: Int
    package var heartbeatInterval: Double = 1
    package var liveness: Int = 5
    /// Seconds a stopping worker keeps working on its current segment; then it returns the frames
    /// it has finished (PARTIAL) and the rest is planned anew.
    package var graceSeconds: Double = 30
    /// Largest message accepted from the coordinator.
    package var maxMessageBytes: Int64 = 1 << 30
    /// Longest wait between reconnection attempts.
    package var maxReconnectSeconds: Double = 10
    /// CURVE: the coordinator's public key and this worker's key pair.
    package var curve: (serverKey: String, keys: CurveKeyPair)?
    /// Fine-tunes jobs' models (`worker --personalise`): the worker advertises `personalise`.
    package var personaliser: Personaliser?
    /// Where jobs' personalised weights are kept, by SHA-256.
    package var weightsCache = WeightsCache(root: WeightsCache.defaultRoot())

    package init(endpoint: String, name: String, threads: Int) {
        self.endpoint = endpoint
        self.name = name
        self.threads = threads
    }
}

/// A worker process's engine: one thread owns the DEALER socket (heartbeats, messages), another
/// does the heavy work of one segment at a time, so heartbeats continue during long segments.
package final class WorkerNode: Sendable {
    let options: WorkerOptions
    let stage: any Stage
    let logger: Logger
    let outbox = Mailbox<WorkMessage>()
    let control = Mutex(ControlState())
    let stopSignal = EventSignal()
    /// The worker's peak resident memory, segment by segment (logged after each, `segment memory`).
    let peaks = SegmentPeaks()

    struct ControlState {
        var stopping = false
        var stopRequestedAt: ContinuousClock.Instant?
        var current: RunningTask?
    }

    /// The segment (or fine-tune) being processed and its cancel flag.
    final class RunningTask: Sendable, CustomStringConvertible {
        /// The segment's lease; nil for a fine-tune.
        let ref: TaskRef?
        /// The fine-tune's lease; nil for a segment.
        let train: TrainRef?
        /// Its rank in that fine-tune (0: it holds the lease).
        let trainRank: Int
        let cancelled = Atomic<Bool>(false)
        let handBack = Atomic<Bool>(false)
        /// Stop after the frame in hand and return the frames finished (a partial result).
        let wrapUp = Atomic<Bool>(false)
        /// Its RESULT or FAILED is posted; the worker is as good as idle.
        let finished = Atomic<Bool>(false)
        init(ref: TaskRef) {
            self.ref = ref
            self.train = nil
            self.trainRank = 0
        }
        init(train: TrainRef, rank: Int) {
            self.ref = nil
            self.train = train
            self.trainRank = rank
        }
        var description: String { ref.map { "\($0)" } ?? train.map { "\($0)" } ?? "nothing" }
    }

    package init(options: WorkerOptions, stage: any Stage, logger: Logger) {
        self.options = options
        self.stage = stage
        var l = logger
        l[metadataKey: "worker"] = .string(options.name)
        self.logger = l
    }

    /// Asks the worker to stop: it finishes its current segment within the grace period or
    /// returns the frames finished by then (the rest is handed back), says DISCONNECT, and `run()`
    /// returns. Safe from any thread (a signal handler task).
    package func stop() {
        control.withLock { s in
            if !s.stopping {
                s.stopping = true
                s.stopRequestedAt = .now
            }
        }
        stopSignal.raise()
    }

    /// Runs until ``stop()``; blocks the calling thread (start it on a thread of its own).
    package func run() throws {
        // A context of our own: when `run()` returns, the socket closes and then the context's
        // termination waits (up to the linger set on the way out) until libzmq has sent the last
        // RESULT and DISCONNECT. With the process-wide context the process could exit first.
        let context = ZMQContext()
        let options = self.options
        func connectedSocket() throws -> (ZMQSocket, ZMQSocketMonitor) {
            let socket = try ZMQSocket(.dealer, context: context)
            try socket.setRoutingID(Array("\(options.name)#\(ProcessInfo.processInfo.processIdentifier)".utf8))
            try socket.setMaxMessageSize(options.maxMessageBytes)
            try socket.setReconnectInterval(milliseconds: 100, max: Int(options.maxReconnectSeconds * 1000))
            try socket.setSendHighWaterMark(10_000)
            if let curve = options.curve {
                try socket.setCurveClient(serverKey: curve.serverKey, publicKey: curve.keys.publicKey, secretKey: curve.keys.secretKey)
            }
            // Handshake outcomes: a coordinator that refuses our key says so in the log, not by silence.
            let monitor = try ZMQSocketMonitor(socket)
            try socket.connect(options.endpoint)
            return (socket, monitor)
        }
        var (socket, monitor) = try connectedSocket()
        if Self.tunesAllocator {
            let fixed = ProcessMemory.tuneAllocator()
            logger.debug("allocator", metadata: [
                "mmap_threshold": .string(fixed ? "\(ProcessMemory.workerMMapThreshold >> 10) KiB" : "set by the environment"),
                "trim": "after every segment"])
        }
        logger.info("connecting", metadata: ["endpoint": .string(options.endpoint), "stage": .string(stage.name),
                                             "threads": .stringConvertible(options.threads)])

        // The link's rules (heartbeats, silence, grace, refused keys) are a pure state machine;
        // this loop turns the socket's and the node's happenings into its events and does what
        // it says.
        var link = WorkerLink(settings: WorkerLink.Settings(
            heartbeat: .milliseconds(Int(options.heartbeatInterval * 1000)), liveness: options.liveness,
            grace: .milliseconds(Int(options.graceSeconds * 1000)), maxReconnect: .milliseconds(Int(options.maxReconnectSeconds * 1000))))
        let clock = ContinuousClock()
        let origin = clock.now
        func now() -> Duration { clock.now - origin }
        var pending: [[[UInt8]]] = []  // messages that would have blocked; retried in order

        func send(_ m: WorkMessage) {
            pending.append(m.encode())
            flush()
            _ = link.handle(.sent(at: now()))
        }
        func flush() {
            while let first = pending.first {
                do {
                    guard try socket.send(first) else { return }
                    pending.removeFirst()
                } catch {
                    logger.warning("send failed: \(error)")
                    return
                }
            }
        }
        func hello() -> WorkMessage {
            let (busy, training, rank) = control.withLock { s in (s.current?.ref, s.current?.train, s.current?.trainRank ?? 0) }
            return .ready(WorkerHello(
                name: options.name, host: ProcessInfo.processInfo.hostName, pid: Int(ProcessInfo.processInfo.processIdentifier),
                threads: options.threads, stage: stage.name, model: stage.model,
                capabilities: ["stage:\(stage.name)"] + (stage.model.map { ["model:\($0)"] } ?? [])
                    + (options.personaliser?.capabilities ?? []),
                version: DubfarmVersion.current, busyWith: busy, busyTraining: training, busyTrainingRank: rank))
        }
        var poller = ZMQPoller([.socket(socket), .fd(outbox.signal.fd), .fd(stopSignal.fd), .socket(monitor.socket)])
        /// Does what the link says; false when the worker is to end.
        func perform(_ actions: [WorkerLink.Action]) throws -> Bool {
            for action in actions {
                switch action {
                case .sendReady: send(hello())
                case .sendHeartbeat: send(.heartbeat)
                case .handBack:
                    if let current = control.withLock({ $0.current }) {
                        current.handBack.store(true, ordering: .relaxed)
                        if current.ref != nil, !(stage is any PacketStage) {
                            // Nothing finished is thrown away: the frames done so far go back as a
                            // PARTIAL result and the coordinator plans the rest anew.
                            logger.notice("grace period over: returning the segment's finished frames, handing the rest back",
                                          metadata: ["segment": .stringConvertible(current)])
                            current.wrapUp.store(true, ordering: .relaxed)
                        } else {
                            logger.notice("grace period over: handing \(current.ref == nil ? "personalisation" : "segment") back",
                                          metadata: ["segment": .stringConvertible(current)])
                            current.cancelled.store(true, ordering: .relaxed)
                        }
                    }
                case .disconnect:
                    // The last segment's RESULT was posted before `current` was cleared: send it first.
                    for m in outbox.drain() { send(m) }
                    send(.disconnect(reason: "worker stopping"))
                    // Closing the socket and its context then waits up to this long for delivery.
                    try? socket.setLinger(milliseconds: 5000)
                    logger.info("stopped")
                    return false
                case .reconnect:
                    // libzmq does not retry a connection whose key was refused: a new socket does,
                    // so a key added to the coordinator's allow-list later admits this worker.
                    logger.info("connecting again with a new socket (the coordinator refused the last handshake)")
                    (socket, monitor) = try connectedSocket()
                    poller = ZMQPoller([.socket(socket), .fd(outbox.signal.fd), .fd(stopSignal.fd), .socket(monitor.socket)])
                case .logAnswered:
                    logger.info("coordinator answered")
                case .logSilent(let silence):
                    logger.warning("coordinator silent for \(silence): reconnecting")
                case .logRefused(let authentication):
                    if authentication {
                        logger.error("the coordinator refused this worker's key (public key \(options.curve.map { String($0.keys.publicKey.prefix(8)) } ?? "none")…): add its public key file to the coordinator's security.authorized_workers")
                    } else {
                        logger.error(options.curve == nil
                            ? "the security handshake with the coordinator failed: it probably requires CURVE; pass --key-file and --server-key"
                            : "the security handshake with the coordinator failed: check --server-key (the coordinator's public key) and that the coordinator has CURVE on")
                    }
                }
            }
            return true
        }

        _ = try perform(link.handle(.started(at: now())))
        while true {
            // Results and reports first: a stopping worker must not leave its last RESULT behind.
            for m in outbox.drain() { send(m) }
            let (stopRequestedAt, current) = control.withLock { ($0.stopRequestedAt, $0.current) }
            if let stopRequestedAt { _ = link.handle(.stopRequested(at: stopRequestedAt - origin)) }
            guard try perform(link.handle(.tick(at: now(), work: current == nil ? .idle : .busy))) else { return }
            let timeout = link.pollTimeout(at: now())
            let ms = max(1, Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
            let ready = try poller.poll(timeoutMilliseconds: pending.isEmpty ? ms : min(ms, 20))
            if ready[2] { stopSignal.clear() }
            if ready[3] {
                while let e = try monitor.next() {
                    guard e.isAuthenticationFailure || e.isProtocolFailure else { continue }
                    _ = try perform(link.handle(.handshakeFailed(at: now(), authentication: e.isAuthenticationFailure)))
                }
            }
            if ready[0] {
                while let frames = try socket.receive() {
                    _ = try perform(link.handle(.received(at: now())))
                    let message: WorkMessage
                    do { message = try WorkMessage.decode(frames) } catch {
                        logger.warning("dropped a malformed message from the coordinator: \(error)")
                        continue
                    }
                    handle(message, send: send)
                }
            }
            if ready[1] {
                for m in outbox.drain() { send(m) }
            }
            flush()
        }
    }

    private func handle(_ message: WorkMessage, send: (WorkMessage) -> Void) {
        switch message {
        case .task(let task):
            guard let running = start(RunningTask(ref: task.ref)) else {
                send(.failed(task.ref, FailureReport(code: DubfarmError.Code.cancelled.rawValue,
                                                     message: "worker \(options.name) is busy or stopping", handedBack: true)))
                return
            }
            let thread = Thread { [self] in process(task, running) }
            thread.name = "segment \(task.ref.segment)"
            thread.stackSize = 16 << 20
            thread.start()
        case .cancel(let ref):
            control.withLock { s in
                if let c = s.current, c.ref == ref {
                    c.cancelled.store(true, ordering: .relaxed)
                    logger.info("segment cancelled by coordinator", metadata: ["segment": .stringConvertible(ref)])
                }
            }
        case .train(let task):
            guard options.personaliser != nil, let running = start(RunningTask(train: task.ref, rank: task.gang?.rank ?? 0)) else {
                send(.trainFailed(task.ref, FailureReport(code: DubfarmError.Code.cancelled.rawValue,
                                                          message: "worker \(options.name) is busy, stopping or cannot personalise", handedBack: true)))
                return
            }
            let thread = Thread { [self] in personalise(task, running) }
            thread.name = "personalise \(task.ref.job)"
            thread.start()
        case .cancelTrain(let ref):
            control.withLock { s in
                if let c = s.current, c.train == ref {
                    c.cancelled.store(true, ordering: .relaxed)
                    logger.info("personalisation cancelled by coordinator", metadata: ["job": .stringConvertible(ref.job)])
                }
            }
        case .weights(let sha256, let bytes):
            do {
                try options.weightsCache.store(bytes, sha256: sha256)
                logger.info("personalised weights received", metadata: ["weights": .string(sha256), "bytes": .stringConvertible(bytes.count)])
            } catch {
                logger.error("personalised weights refused: \(error)")
            }
        case .disconnect(let reason):
            logger.notice("coordinator said goodbye: \(reason)")
        case .heartbeat, .ready, .progress, .result, .partial, .failed, .trainProgress, .checkpoint, .trained, .trainFailed, .trainLeft:
            break
        }
    }

    /// Makes `work` the current work unless the worker is busy (or stopping); returns it if so.
    private func start(_ work: RunningTask) -> RunningTask? {
        control.withLock { s in
            guard s.current == nil || s.current!.finished.load(ordering: .acquiring), !s.stopping else { return nil }
            s.current = work
            return work
        }
    }

    /// A fine-tune, on its own thread: the trainer runs as a child process; its progress and
    /// checkpoints go to the coordinator as they come.
    private func personalise(_ task: TrainAssignment, _ running: RunningTask) {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(task.ref.job)
        let outbox = self.outbox
        let message: WorkMessage
        do {
            guard let personaliser = options.personaliser else {
                throw DubfarmError(.unsupported, "worker \(options.name) cannot personalise (start it with --personalise)")
            }
            if let outcome = try personaliser.run(task, logger: log, cancelled: { running.cancelled.load(ordering: .relaxed) },
                                                  report: { outbox.post($0) }) {
                let sha = WeightsCache.sha256(outcome.weights)
                // Kept here too: this worker will most likely dub some of the job's segments.
                _ = try? options.weightsCache.store(outcome.weights, sha256: sha)
                log.info("personalisation done", metadata: [
                    "weights": .string(sha), "step": .stringConvertible(outcome.progress.step),
                    "seconds": .string(String(format: "%.1f", outcome.progress.elapsed))])
                message = .trained(task.ref, outcome.progress, report: outcome.report, weights: outcome.weights)
            } else {
                // A gang member: its lease holder returns the weights.
                log.info("left the data-parallel personalisation", metadata: ["rank": .stringConvertible(task.gang?.rank ?? 0)])
                message = .trainLeft(task.ref, error: nil)
            }
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
            let handedBack = running.handBack.load(ordering: .relaxed)
            if running.cancelled.load(ordering: .relaxed) {
                log.notice(handedBack ? "personalisation handed back" : "personalisation cancelled")
            } else {
                log.error("personalisation failed: \(e.message)")
            }
            if (task.gang?.rank ?? 0) > 0 {
                message = .trainLeft(task.ref, error: e.message)
            } else {
                message = .trainFailed(task.ref, FailureReport(code: e.code.rawValue, message: e.message, handedBack: handedBack))
            }
        }
        running.finished.store(true, ordering: .releasing)
        outbox.post(message)
        control.withLock { s in
            if s.current === running { s.current = nil }
        }
        stopSignal.raise()
    }

    /// The heavy work, on its own thread: decode, stage, encode; reports through the outbox.
    private func process(_ task: TaskAssignment, _ running: RunningTask) {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(task.ref.segment.job)
        log[metadataKey: "segment"] = .stringConvertible(task.ref.segment.index)
        log.info("segment started", metadata: ["frames": .string("\(task.outputFrames.lowerBound)..<\(task.outputFrames.upperBound)")])
        // At debug level the worker logs each segment's memory; its peak needs the kernel's reset
        // (so VmHWM in /proc then covers the current segment only: the log has the process's).
        let measuresMemory = log.logLevel <= .debug
        if measuresMemory { peaks.startSegment() }
        let started = ContinuousClock.now
        var lastProgress = ContinuousClock.now
        let total = task.outputFrames.count
        let outbox = self.outbox
        let message: WorkMessage
        do {
            guard task.stage == stage.name else {
                throw DubfarmError(.unsupported, "worker \(options.name) runs stage '\(stage.name)', not '\(task.stage)'")
            }
            var weights: PersonalisedWeights?
            if let sha = task.weights {
                guard let cached = options.weightsCache.weights(sha) else {
                    throw DubfarmError(.notFound, "the job's personalised weights \(sha.prefix(16))… are not on worker \(options.name) (the coordinator sends them before the job's first task)")
                }
                weights = cached
                log.info("segment runs on the job's personalised weights", metadata: ["weights": .string(sha)])
            }
            var context = StageContext(task: task.ref, outputFrames: task.outputFrames, decodedFrames: task.decodedFrames,
                                       frameRate: task.frameRate, audio: task.audio, sourceFace: task.sourceFace,
                                       threads: options.threads,
                                       isCancelled: { running.cancelled.load(ordering: .relaxed) })
            context.weights = weights
            context.rotation = task.rotation
            if let packetStage = stage as? any PacketStage {
                // No decoding or encoding: the stage returns the segment's packets itself.
                let output = try packetStage.process(task, context: context)
                let seconds = (ContinuousClock.now - started).seconds
                log.info("segment done", metadata: ["seconds": .string(String(format: "%.2f", seconds))])
                message = .result(task.ref, output: output, stats: SegmentStats(frames: total, stageSeconds: seconds, totalSeconds: seconds))
            } else {
                let inner = try stage.makeProcessor(for: context)
                let processor = InstrumentedProcessor(inner, cancelled: running, what: "segment \(task.ref.segment)")
                let output = try SegmentRenderer.render(
                    input: task.input, framePTS: task.framePTS, decodedFrames: task.decodedFrames,
                    outputFrames: task.outputFrames, frameRate: task.frameRate, encoder: task.encoder,
                    layout: stage.layout, processor: processor, threads: options.threads
                ) { done in
                    if ContinuousClock.now - lastProgress > .milliseconds(500) {
                        lastProgress = .now
                        outbox.post(.progress(task.ref, framesDone: done, framesTotal: total))
                    }
                } stopEarly: {
                    running.wrapUp.load(ordering: .relaxed)
                }
                let returned = output.packets.count
                let counts = stage.statistics(of: inner)
                let steps = stage.timings(of: inner)
                let seconds = (ContinuousClock.now - started).seconds
                let stats = SegmentStats(frames: returned, framesWithFace: counts.framesWithFace, framesSwapped: counts.framesSwapped,
                                         decodeSeconds: 0, stageSeconds: processor.stageSeconds,
                                         encodeSeconds: max(0, seconds - processor.stageSeconds), totalSeconds: seconds,
                                         steps: steps.isEmpty ? nil : steps.map { StepTiming(step: $0.step, msPerFrame: $0.msPerFrame) })
                var done: Logger.Metadata = ["seconds": .string(String(format: "%.2f", seconds)),
                                             "fps": .string(String(format: "%.1f", Double(returned) / max(seconds, 1e-9)))]
                if stage.name != "passthrough" {
                    done["with_face"] = .stringConvertible(counts.framesWithFace)
                    done["swapped"] = .stringConvertible(counts.framesSwapped)
                }
                if !steps.isEmpty {
                    done["ms_per_frame"] = .string(steps.map { "\($0.step) \(String(format: "%.1f", $0.msPerFrame))" }.joined(separator: ", "))
                }
                if returned < total {
                    done["frames"] = .string("\(returned) of \(total)")
                    log.notice("segment stopped early: returning its finished frames", metadata: done)
                    message = .partial(task.ref, frames: returned, output: output, stats: stats)
                } else {
                    log.info("segment done", metadata: done)
                    message = .result(task.ref, output: output, stats: stats)
                }
            }
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
            let handedBack = running.handBack.load(ordering: .relaxed)
            if running.cancelled.load(ordering: .relaxed) || handedBack && e.code == .cancelled {
                log.notice(handedBack ? "segment handed back" : "segment cancelled")
            } else {
                log.error("segment failed: \(e.message)")
            }
            message = .failed(task.ref, FailureReport(code: e.code.rawValue, message: e.message, handedBack: handedBack))
        }
        // This segment's peak, read before the next segment can start (and reset it).
        let atEnd = measuresMemory ? ProcessMemory.current() : nil
        // Post before clearing `current`: whoever sees the worker idle also finds the message queued.
        running.finished.store(true, ordering: .releasing)
        outbox.post(message)
        control.withLock { s in
            if s.current === running { s.current = nil }
        }
        stopSignal.raise()
        // The segment's decoder, encoder and stage are gone: hand what they freed back to the
        // kernel, so that what stays resident from one segment to the next is what is in use.
        let trimStart = ContinuousClock.now
        let trimmed = Self.tunesAllocator && ProcessMemory.trimAllocator()
        let trimMs = (ContinuousClock.now - trimStart).seconds * 1000
        if let atEnd {
            log.debug("segment memory", metadata: memoryMetadata(atEnd: atEnd, trimmed: trimmed, trimMs: trimMs))
        }
    }

    /// `segment memory` figures: `rss_mib` and `malloc_*` after the segment (and the trim),
    /// `peak_rss_mib` the process's peak since it started, `segment_peak_rss_mib` the peak while
    /// the segment ran (from `atEnd`, read as it ended).
    private func memoryMetadata(atEnd: ProcessMemory, trimmed: Bool, trimMs: Double) -> Logger.Metadata {
        var now = ProcessMemory.current()
        let (segmentPeak, processPeak) = peaks.peaks(atEnd)
        now.peakResidentBytes = processPeak
        var m = now.logMetadata
        if let segmentPeak { m["segment_peak_rss_mib"] = .string(String(format: "%.1f", Double(segmentPeak) / 1_048_576)) }
        m["trimmed"] = .stringConvertible(trimmed)
        m["trim_ms"] = .string(String(format: "%.1f", trimMs))
        return m
    }

    /// Whether the worker fixes glibc's mmap threshold and trims the allocator after every segment
    /// (``ProcessMemory``), so its memory does not grow with the number of segments it has done.
    /// `DUBFARM_MALLOC_TUNING=0` leaves glibc's defaults, to measure what this saves
    /// (`tools/bench/memory.sh`; docs/benchmarks.md, worker memory).
    static let tunesAllocator = ProcessInfo.processInfo.environment["DUBFARM_MALLOC_TUNING"] != "0"
}

/// Wraps a stage's processor: stops the segment when it is cancelled (between frames) and
/// measures the time spent in the stage itself.
final class InstrumentedProcessor: FrameProcessor {
    let inner: any FrameProcessor
    let running: WorkerNode.RunningTask
    let what: String
    private(set) var stageSeconds = 0.0

    init(_ inner: any FrameProcessor, cancelled running: WorkerNode.RunningTask, what: String) {
        self.inner = inner
        self.running = running
        self.what = what
    }

    func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        if running.cancelled.load(ordering: .relaxed) { throw DubfarmError(.cancelled, "\(what) cancelled") }
        let t = ContinuousClock.now
        defer { stageSeconds += (ContinuousClock.now - t).seconds }
        return try inner.process(frame)
    }

    func flush() throws -> [VideoFrame] {
        if running.cancelled.load(ordering: .relaxed) { throw DubfarmError(.cancelled, "\(what) cancelled") }
        let t = ContinuousClock.now
        defer { stageSeconds += (ContinuousClock.now - t).seconds }
        return try inner.flush()
    }
}
