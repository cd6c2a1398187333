import DubfarmCore

/// What a worker says about itself when it connects (READY).
package struct WorkerHello: Codable, Sendable, Hashable {
    /// The worker's name (unique in the farm; `--name`, default host-pid).
    package var name: String
    package var host: String
    package var pid: Int
    /// Threads the stage may use.
    package var threads: Int
    /// The stage it runs (`passthrough`, `dub`, …).
    package var stage: String
    /// Identifier of the model it holds, if any.
    package var model: String?
    /// Free-form capabilities (`stage:dub`, `model:small`, …).
    package var capabilities: [String]
    /// dubfarm version.
    package var version: String
    /// The task it is still working on after reconnecting, if any.
    package var busyWith: TaskRef?
    /// The fine-tune it is still running after reconnecting, if any, and its rank in it (0:
    /// it holds the lease; 1…: a member of a data-parallel gang).
    package var busyTraining: TrainRef?
    package var busyTrainingRank: Int = 0

    /// The capability of a worker that fine-tunes jobs' models (`worker --personalise`).
    package static let personaliseCapability = "personalise"
    package var canPersonalise: Bool { capabilities.contains(Self.personaliseCapability) }
    /// The capability prefix naming the trainer's device when it is not the CPU (`personalise-device:cuda`).
    package static let personaliseDevicePrefix = "personalise-device:"
    /// The capability prefix naming where it hosts a data-parallel fine-tune's rendezvous as
    /// rank 0 (`rendezvous:HOST:PORT`).
    package static let rendezvousPrefix = "rendezvous:"
    /// The device its trainer runs on (`cpu` unless it says otherwise).
    package var personaliseDevice: String {
        capabilities.first { $0.hasPrefix(Self.personaliseDevicePrefix) }.map { String($0.dropFirst(Self.personaliseDevicePrefix.count)) } ?? "cpu"
    }
    /// `HOST:PORT` of its rendezvous, if it can host one.
    package var rendezvous: String? {
        capabilities.first { $0.hasPrefix(Self.rendezvousPrefix) }.map { String($0.dropFirst(Self.rendezvousPrefix.count)) }
    }

    package init(name: String, host: String, pid: Int, threads: Int, stage: String, model: String? = nil,
                capabilities: [String] = [], version: String, busyWith: TaskRef? = nil,
                busyTraining: TrainRef? = nil, busyTrainingRank: Int = 0) {
        self.busyTraining = busyTraining
        self.busyTrainingRank = busyTrainingRank
        self.name = name
        self.host = host
        self.pid = pid
        self.threads = threads
        self.stage = stage
        self.model = model
        self.capabilities = capabilities
        self.version = version
        self.busyWith = busyWith
    }
}

/// One lease of one segment.
package struct TaskRef: Codable, Sendable, Hashable, CustomStringConvertible {
    package var segment: SegmentRef
    package var token: LeaseToken
    package init(segment: SegmentRef, token: LeaseToken) {
        self.segment = segment
        self.token = token
    }
    package var description: String { "\(segment)@\(String(token.description.prefix(8)))" }
}

/// Everything a worker needs to process one segment: no shared filesystem, no database.
package struct TaskAssignment: Sendable, Hashable {
    package var ref: TaskRef
    package var stage: String
    /// Frames to encode and return (absolute indices).
    package var outputFrames: Range<Int>
    /// Frames decoded and shown to the stage: `outputFrames` plus context on each side.
    package var decodedFrames: Range<Int>
    /// Presentation timestamps of `decodedFrames` in the input's time base.
    package var framePTS: [Int64]
    package var frameRate: Rational
    package var encoder: EncoderSettings
    /// The source packets: from the keyframe at or before `decodedFrames` to just past them.
    package var input: PacketBundle
    /// The dub track's 16 kHz mono PCM around the segment.
    package var audio: AudioWindow
    /// The job's source face image (PNG/JPEG bytes) when it has one.
    package var sourceFace: [UInt8]?
    /// Identifier of the model the job requires, if any.
    package var model: String?
    /// SHA-256 (hex) of the job's personalised weights (`submit --personalise`), which the
    /// coordinator sent in a WEIGHTS message before; nil: the worker's own weights.
    package var weights: String?
    /// The video's display rotation in degrees counter-clockwise (0, 90, 180 or 270): a stage
    /// that looks for faces turns frames upright first (`VideoFrame.rotated(by:)`). The output
    /// keeps the input's pixels' orientation; the stitch keeps the rotation.
    package var rotation: Int

    package init(ref: TaskRef, stage: String, outputFrames: Range<Int>, decodedFrames: Range<Int>, framePTS: [Int64],
                frameRate: Rational, encoder: EncoderSettings, input: PacketBundle, audio: AudioWindow,
                sourceFace: [UInt8]? = nil, model: String? = nil, weights: String? = nil, rotation: Int = 0) {
        self.ref = ref
        self.stage = stage
        self.outputFrames = outputFrames
        self.decodedFrames = decodedFrames
        self.framePTS = framePTS
        self.frameRate = frameRate
        self.encoder = encoder
        self.input = input
        self.audio = audio
        self.sourceFace = sourceFace
        self.model = model
        self.weights = weights
        self.rotation = rotation
    }
}

/// Why a segment failed on a worker.
package struct FailureReport: Codable, Sendable, Hashable {
    /// A ``DubfarmError/Code`` raw value.
    package var code: String
    package var message: String
    /// The worker gave the segment back unfinished (it is stopping); not counted as a failure.
    package var handedBack: Bool

    package init(code: String, message: String, handedBack: Bool = false) {
        self.code = code
        self.message = message
        self.handedBack = handedBack
    }
}

/// A message between the coordinator's work endpoint and a worker.
///
/// On the wire: `[DUBFARM-WORK/6, COMMAND, header, payload frames…]`, the header in binary
/// (see `WorkHeaders.swift`; version 1 had JSON headers; version 3 added personalisation:
/// `PersonaliseMessages.swift`; version 4 data-parallel personalisation: TRAIN's gang, TRAIN-LEFT;
/// version 5 TASK's rotation; version 6 PARTIAL).
/// Any message counts as a heartbeat.
package enum WorkMessage: Sendable, Hashable {
    case ready(WorkerHello)
    case task(TaskAssignment)
    case progress(TaskRef, framesDone: Int, framesTotal: Int)
    case result(TaskRef, output: PacketBundle, stats: SegmentStats)
    /// Worker → coordinator: a stopping worker's first `frames` output frames of the task (more
    /// than none, fewer than all), held to a RESULT's rules for those frames; the coordinator
    /// plans the rest of the segment anew.
    case partial(TaskRef, frames: Int, output: PacketBundle, stats: SegmentStats)
    case failed(TaskRef, FailureReport)
    case cancel(TaskRef)
    case heartbeat
    case disconnect(reason: String)
    /// Coordinator → worker: a personalised weights file, by its SHA-256, before the first
    /// task that names it.
    case weights(sha256: String, bytes: [UInt8])
    /// Coordinator → worker: fine-tune the model for a job.
    case train(TrainAssignment)
    case trainProgress(TrainRef, TrainProgress)
    /// Worker → coordinator: a checkpoint of the fine-tune, to resume from elsewhere.
    case checkpoint(TrainRef, TrainProgress, bytes: [UInt8])
    /// Worker → coordinator: the fine-tuned weights and the trainer's report (JSON).
    case trained(TrainRef, TrainProgress, report: String, weights: [UInt8])
    case trainFailed(TrainRef, FailureReport)
    /// Coordinator → worker: stop that fine-tune (its job ended or the lease is not current).
    case cancelTrain(TrainRef)
    /// Worker → coordinator: a gang member (rank ≥ 1) of a data-parallel fine-tune has left it;
    /// `error` says why when it did not end with the fine-tune. The lease holder reports the
    /// fine-tune itself (TRAINED, TRAIN-FAILED).
    case trainLeft(TrainRef, error: String?)

    package var command: String {
        switch self {
        case .ready: return "READY"
        case .task: return "TASK"
        case .progress: return "PROGRESS"
        case .result: return "RESULT"
        case .partial: return "PARTIAL"
        case .failed: return "FAILED"
        case .cancel: return "CANCEL"
        case .heartbeat: return "HEARTBEAT"
        case .disconnect: return "DISCONNECT"
        case .weights: return "WEIGHTS"
        case .train: return "TRAIN"
        case .trainProgress: return "TRAIN-PROGRESS"
        case .checkpoint: return "CHECKPOINT"
        case .trained: return "TRAINED"
        case .trainFailed: return "TRAIN-FAILED"
        case .cancelTrain: return "TRAIN-CANCEL"
        case .trainLeft: return "TRAIN-LEFT"
        }
    }

    // MARK: Encoding

    /// The message as ZeroMQ frames.
    package func encode() -> [[UInt8]] {
        var frames: [[UInt8]] = [Array(ProtocolName.work.utf8), Array(command.utf8)]
        var h = ByteWriter(capacity: 128)
        switch self {
        case .ready(let hello):
            hello.write(&h)
            frames.append(h.bytes)
        case .task(let t):
            t.ref.write(&h)
            h.string(t.stage)
            h.int(t.outputFrames.lowerBound)
            h.int(t.outputFrames.upperBound)
            h.int(t.decodedFrames.lowerBound)
            h.int(t.decodedFrames.upperBound)
            h.u32(UInt32(t.framePTS.count))
            for pts in t.framePTS { h.i64(pts) }
            t.frameRate.write(&h)
            t.encoder.write(&h)
            h.i64(t.audio.startSample)
            h.bool(t.sourceFace != nil)
            h.optionalString(t.model)
            h.optionalString(t.weights)
            h.u16(UInt16(((t.rotation % 360) + 360) % 360))
            frames.append(h.bytes)
            frames.append(t.input.encoded())
            var w = ByteWriter(capacity: t.audio.samples.count * 4 + 8)
            w.floats(t.audio.samples)
            frames.append(w.bytes)
            frames.append(t.sourceFace ?? [])
        case .progress(let ref, let done, let total):
            ref.write(&h)
            h.int(done)
            h.int(total)
            frames.append(h.bytes)
        case .result(let ref, let output, let stats):
            ref.write(&h)
            stats.write(&h)
            frames.append(h.bytes)
            frames.append(output.encoded())
        case .partial(let ref, let count, let output, let stats):
            ref.write(&h)
            h.int(count)
            stats.write(&h)
            frames.append(h.bytes)
            frames.append(output.encoded())
        case .failed(let ref, let failure):
            ref.write(&h)
            failure.write(&h)
            frames.append(h.bytes)
        case .cancel(let ref):
            ref.write(&h)
            frames.append(h.bytes)
        case .heartbeat:
            frames.append([])
        case .disconnect(let reason):
            h.string(reason)
            frames.append(h.bytes)
        case .weights(let hash, let bytes):
            h.string(hash)
            frames.append(h.bytes)
            frames.append(bytes)
        case .train(let t):
            t.encode(into: &frames)
        case .trainProgress(let ref, let p):
            ref.write(&h)
            p.write(&h)
            frames.append(h.bytes)
        case .checkpoint(let ref, let p, let bytes):
            ref.write(&h)
            p.write(&h)
            frames.append(h.bytes)
            frames.append(bytes)
        case .trained(let ref, let p, let report, let weights):
            ref.write(&h)
            p.write(&h)
            h.string(report)
            frames.append(h.bytes)
            frames.append(weights)
        case .trainFailed(let ref, let failure):
            ref.write(&h)
            failure.write(&h)
            frames.append(h.bytes)
        case .cancelTrain(let ref):
            ref.write(&h)
            frames.append(h.bytes)
        case .trainLeft(let ref, let error):
            ref.write(&h)
            h.bool(error != nil)
            h.string(error ?? "")
            frames.append(h.bytes)
        }
        return frames
    }

    // MARK: Decoding

    /// Parses frames (without the ROUTER's identity frame); throws
    /// ``DubfarmError/Code/protocolViolation`` for anything unknown or malformed.
    package static func decode<C: Collection>(_ frames: C, limits: ProtocolLimits = .default) throws -> WorkMessage
    where C.Element == [UInt8] {
        let f = Array(frames)
        try limits.checkSize(f, "message")
        guard f.count >= 3 else { throw DubfarmError(.protocolViolation, "message of \(f.count) frames is too short") }
        guard f[0] == Array(ProtocolName.work.utf8) else {
            throw DubfarmError(.protocolViolation, "unknown protocol '\(Wire.string(f[0]) ?? "<binary>")' (expected \(ProtocolName.work))")
        }
        guard let command = Wire.string(f[1]) else { throw DubfarmError(.protocolViolation, "unreadable command frame") }
        for p in f.dropFirst(3) where p.count > limits.maxPayloadBytes {
            throw DubfarmError(.protocolViolation, "\(command): payload of \(p.count) bytes exceeds \(limits.maxPayloadBytes)")
        }
        func expectFrames(_ n: Int) throws {
            guard f.count == n else { throw DubfarmError(.protocolViolation, "\(command): \(f.count) frames, expected \(n)") }
        }
        /// Reads the whole header frame with `read`; anything left over is an error.
        func header<T>(_ read: (inout ByteReader) throws -> T) throws -> T {
            guard f[2].count <= limits.maxHeaderBytes else {
                throw DubfarmError(.protocolViolation, "\(command): header of \(f[2].count) bytes exceeds \(limits.maxHeaderBytes)")
            }
            var r = ByteReader(f[2])
            do {
                let value = try read(&r)
                try r.expectEnd()
                return value
            } catch let e as DubfarmError {
                throw DubfarmError(.protocolViolation, "\(command): \(e.message)")
            }
        }

        switch command {
        case "READY":
            try expectFrames(3)
            return .ready(try header(WorkerHello.read))
        case "TASK":
            try expectFrames(6)
            let h = try header { r in
                (ref: try TaskRef.read(&r), stage: try r.string(max: maxNameBytes),
                 outputStart: try r.int(), outputEnd: try r.int(), decodedStart: try r.int(), decodedEnd: try r.int(),
                 framePTS: try (0..<(try r.count(minElementSize: 8, max: 1 << 24))).map { _ in try r.i64() },
                 frameRate: try Rational.read(&r), encoder: try EncoderSettings.read(&r), audioStart: try r.i64(),
                 hasFace: try r.bool(), model: try r.optionalString(max: maxNameBytes),
                 weights: try r.optionalString(max: maxNameBytes), rotation: Int(try r.u16()))
            }
            guard h.outputStart >= 0, h.outputStart < h.outputEnd, h.decodedStart <= h.outputStart,
                  h.decodedEnd >= h.outputEnd, h.framePTS.count == h.decodedEnd - h.decodedStart,
                  h.frameRate.num > 0, h.frameRate.den > 0 else {
                throw DubfarmError(.protocolViolation, "TASK: inconsistent frame ranges")
            }
            guard h.rotation % 90 == 0, h.rotation < 360 else {
                throw DubfarmError(.protocolViolation, "TASK: rotation \(h.rotation)° is not a quarter turn")
            }
            let bundle = try PacketBundle(decoding: f[3])
            var r = ByteReader(f[4])
            let samples = try r.floats()
            try r.expectEnd()
            guard h.hasFace == !f[5].isEmpty else { throw DubfarmError(.protocolViolation, "TASK: face frame disagrees with header") }
            return .task(TaskAssignment(
                ref: h.ref, stage: h.stage, outputFrames: h.outputStart..<h.outputEnd, decodedFrames: h.decodedStart..<h.decodedEnd,
                framePTS: h.framePTS, frameRate: h.frameRate, encoder: h.encoder, input: bundle,
                audio: AudioWindow(startSample: h.audioStart, samples: samples), sourceFace: h.hasFace ? f[5] : nil, model: h.model,
                weights: h.weights, rotation: h.rotation))
        case "PROGRESS":
            try expectFrames(3)
            let h = try header { r in (ref: try TaskRef.read(&r), done: try r.int(), total: try r.int()) }
            return .progress(h.ref, framesDone: h.done, framesTotal: h.total)
        case "RESULT":
            try expectFrames(4)
            let h = try header { r in (ref: try TaskRef.read(&r), stats: try SegmentStats.read(&r)) }
            return .result(h.ref, output: try PacketBundle(decoding: f[3]), stats: h.stats)
        case "PARTIAL":
            try expectFrames(4)
            let h = try header { r in (ref: try TaskRef.read(&r), frames: try r.int(), stats: try SegmentStats.read(&r)) }
            guard h.frames > 0 else { throw DubfarmError(.protocolViolation, "PARTIAL: \(h.frames) frames (a partial result holds at least one)") }
            return .partial(h.ref, frames: h.frames, output: try PacketBundle(decoding: f[3]), stats: h.stats)
        case "FAILED":
            try expectFrames(3)
            let h = try header { r in (ref: try TaskRef.read(&r), failure: try FailureReport.read(&r)) }
            return .failed(h.ref, h.failure)
        case "CANCEL":
            try expectFrames(3)
            return .cancel(try header(TaskRef.read))
        case "HEARTBEAT":
            try expectFrames(3)
            try header { _ in () }
            return .heartbeat
        case "DISCONNECT":
            try expectFrames(3)
            return .disconnect(reason: try header { r in try r.string(max: maxTextBytes) })
        case "WEIGHTS":
            try expectFrames(4)
            let hash = try header { r in try r.string(max: maxNameBytes) }
            guard Self.isSHA256(hash) else { throw DubfarmError(.protocolViolation, "WEIGHTS: '\(hash.prefix(80))' is not a SHA-256") }
            return .weights(sha256: hash, bytes: f[3])
        case "TRAIN":
            try expectFrames(5)
            let body = f[3], checkpoint = f[4]
            return .train(try header { r in try TrainAssignment.decode(header: &r, body: body, checkpoint: checkpoint) })
        case "TRAIN-PROGRESS":
            try expectFrames(3)
            let h = try header { r in (ref: try TrainRef.read(&r), p: try TrainProgress.read(&r)) }
            return .trainProgress(h.ref, h.p)
        case "CHECKPOINT":
            try expectFrames(4)
            let h = try header { r in (ref: try TrainRef.read(&r), p: try TrainProgress.read(&r)) }
            return .checkpoint(h.ref, h.p, bytes: f[3])
        case "TRAINED":
            try expectFrames(4)
            let h = try header { r in (ref: try TrainRef.read(&r), p: try TrainProgress.read(&r), report: try r.string(max: maxTextBytes)) }
            return .trained(h.ref, h.p, report: h.report, weights: f[3])
        case "TRAIN-FAILED":
            try expectFrames(3)
            let h = try header { r in (ref: try TrainRef.read(&r), failure: try FailureReport.read(&r)) }
            return .trainFailed(h.ref, h.failure)
        case "TRAIN-CANCEL":
            try expectFrames(3)
            return .cancelTrain(try header(TrainRef.read))
        case "TRAIN-LEFT":
            try expectFrames(3)
            let h = try header { r in (ref: try TrainRef.read(&r), failed: try r.bool(), error: try r.string(max: maxTextBytes)) }
            return .trainLeft(h.ref, error: h.failed ? h.error : nil)
        default:
            throw DubfarmError(.protocolViolation, "unknown command '\(command)'")
        }
    }
}

extension WorkMessage {
    /// Whether `s` is 64 lowercase hex digits (a SHA-256 as weights are named).
    package static func isSHA256(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}
