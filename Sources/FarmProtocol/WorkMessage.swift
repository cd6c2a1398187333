import DubfarmCore

/// What a worker says about itself when it connects (READY).
public struct WorkerHello: Codable, Sendable, Hashable {
    /// The worker's name (unique in the farm; `--name`, default host-pid).
    public var name: String
    public var host: String
    public var pid: Int
    /// Threads the stage may use.
    public var threads: Int
    /// The stage it runs (`passthrough`, `dub`, …).
    public var stage: String
    /// Identifier of the model it holds, if any.
    public var model: String?
    /// Free-form capabilities (`stage:dub`, `model:small`, …).
    public var capabilities: [String]
    /// dubfarm version.
    public var version: String
    /// The task it is still working on after reconnecting, if any.
    public var busyWith: TaskRef?

    public init(name: String, host: String, pid: Int, threads: Int, stage: String, model: String? = nil,
                capabilities: [String] = [], version: String, busyWith: TaskRef? = nil) {
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
public struct TaskRef: Codable, Sendable, Hashable, CustomStringConvertible {
    public var segment: SegmentRef
    public var token: LeaseToken
    public init(segment: SegmentRef, token: LeaseToken) {
        self.segment = segment
        self.token = token
    }
    public var description: String { "\(segment)@\(String(token.description.prefix(8)))" }
}

/// Everything a worker needs to process one segment: no shared filesystem, no database.
public struct TaskAssignment: Sendable, Hashable {
    public var ref: TaskRef
    public var stage: String
    /// Frames to encode and return (absolute indices).
    public var outputFrames: Range<Int>
    /// Frames decoded and shown to the stage: `outputFrames` plus context on each side.
    public var decodedFrames: Range<Int>
    /// Presentation timestamps of `decodedFrames` in the input's time base.
    public var framePTS: [Int64]
    public var frameRate: Rational
    public var encoder: EncoderSettings
    /// The source packets: from the keyframe at or before `decodedFrames` to just past them.
    public var input: PacketBundle
    /// The dub track's 16 kHz mono PCM around the segment.
    public var audio: AudioWindow
    /// The job's source face image (PNG/JPEG bytes) when it has one.
    public var sourceFace: [UInt8]?
    /// Identifier of the model the job requires, if any.
    public var model: String?

    public init(ref: TaskRef, stage: String, outputFrames: Range<Int>, decodedFrames: Range<Int>, framePTS: [Int64],
                frameRate: Rational, encoder: EncoderSettings, input: PacketBundle, audio: AudioWindow,
                sourceFace: [UInt8]? = nil, model: String? = nil) {
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
    }
}

/// Why a segment failed on a worker.
public struct FailureReport: Codable, Sendable, Hashable {
    /// A ``DubfarmError/Code`` raw value.
    public var code: String
    public var message: String
    /// The worker gave the segment back unfinished (it is stopping); not counted as a failure.
    public var handedBack: Bool

    public init(code: String, message: String, handedBack: Bool = false) {
        self.code = code
        self.message = message
        self.handedBack = handedBack
    }
}

/// A message between the coordinator's work endpoint and a worker.
///
/// On the wire: `[DUBFARM-WORK/1, COMMAND, JSON header, binary payload frames…]`.
/// Any message counts as a heartbeat.
public enum WorkMessage: Sendable, Hashable {
    case ready(WorkerHello)
    case task(TaskAssignment)
    case progress(TaskRef, framesDone: Int, framesTotal: Int)
    case result(TaskRef, output: PacketBundle, stats: SegmentStats)
    case failed(TaskRef, FailureReport)
    case cancel(TaskRef)
    case heartbeat
    case disconnect(reason: String)

    public var command: String {
        switch self {
        case .ready: return "READY"
        case .task: return "TASK"
        case .progress: return "PROGRESS"
        case .result: return "RESULT"
        case .failed: return "FAILED"
        case .cancel: return "CANCEL"
        case .heartbeat: return "HEARTBEAT"
        case .disconnect: return "DISCONNECT"
        }
    }

    // MARK: Encoding

    struct TaskHeader: Codable {
        var ref: TaskRef
        var stage: String
        var outputStart: Int, outputEnd: Int
        var decodedStart: Int, decodedEnd: Int
        var framePTS: [Int64]
        var frameRate: Rational
        var encoder: EncoderSettings
        var audioStart: Int64
        var hasFace: Bool
        var model: String?
    }
    struct ProgressHeader: Codable { var ref: TaskRef; var framesDone: Int; var framesTotal: Int }
    struct ResultHeader: Codable { var ref: TaskRef; var stats: SegmentStats }
    struct FailedHeader: Codable { var ref: TaskRef; var failure: FailureReport }
    struct RefHeader: Codable { var ref: TaskRef }
    struct DisconnectHeader: Codable { var reason: String }
    struct Empty: Codable {}

    /// The message as ZeroMQ frames.
    public func encode() -> [[UInt8]] {
        var frames: [[UInt8]] = [Array(ProtocolName.work.utf8), Array(command.utf8)]
        switch self {
        case .ready(let hello):
            frames.append(Wire.header(hello))
        case .task(let t):
            frames.append(Wire.header(TaskHeader(
                ref: t.ref, stage: t.stage, outputStart: t.outputFrames.lowerBound, outputEnd: t.outputFrames.upperBound,
                decodedStart: t.decodedFrames.lowerBound, decodedEnd: t.decodedFrames.upperBound, framePTS: t.framePTS,
                frameRate: t.frameRate, encoder: t.encoder, audioStart: t.audio.startSample, hasFace: t.sourceFace != nil,
                model: t.model)))
            frames.append(t.input.encoded())
            var w = ByteWriter(capacity: t.audio.samples.count * 4 + 8)
            w.floats(t.audio.samples)
            frames.append(w.bytes)
            frames.append(t.sourceFace ?? [])
        case .progress(let ref, let done, let total):
            frames.append(Wire.header(ProgressHeader(ref: ref, framesDone: done, framesTotal: total)))
        case .result(let ref, let output, let stats):
            frames.append(Wire.header(ResultHeader(ref: ref, stats: stats)))
            frames.append(output.encoded())
        case .failed(let ref, let failure):
            frames.append(Wire.header(FailedHeader(ref: ref, failure: failure)))
        case .cancel(let ref):
            frames.append(Wire.header(RefHeader(ref: ref)))
        case .heartbeat:
            frames.append(Wire.header(Empty()))
        case .disconnect(let reason):
            frames.append(Wire.header(DisconnectHeader(reason: reason)))
        }
        return frames
    }

    // MARK: Decoding

    /// Parses frames (without the ROUTER's identity frame); throws
    /// ``DubfarmError/Code/protocolViolation`` for anything unknown or malformed.
    public static func decode<C: Collection>(_ frames: C, limits: ProtocolLimits = .default) throws -> WorkMessage
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
        func header<T: Decodable>(_ t: T.Type) throws -> T { try Wire.decodeHeader(t, f[2], command: command, limits: limits) }

        switch command {
        case "READY":
            try expectFrames(3)
            return .ready(try header(WorkerHello.self))
        case "TASK":
            try expectFrames(6)
            let h = try header(TaskHeader.self)
            guard h.outputStart >= 0, h.outputStart < h.outputEnd, h.decodedStart <= h.outputStart,
                  h.decodedEnd >= h.outputEnd, h.framePTS.count == h.decodedEnd - h.decodedStart,
                  h.frameRate.num > 0, h.frameRate.den > 0 else {
                throw DubfarmError(.protocolViolation, "TASK: inconsistent frame ranges")
            }
            let bundle = try PacketBundle(decoding: f[3])
            var r = ByteReader(f[4])
            let samples = try r.floats()
            try r.expectEnd()
            guard h.hasFace == !f[5].isEmpty else { throw DubfarmError(.protocolViolation, "TASK: face frame disagrees with header") }
            return .task(TaskAssignment(
                ref: h.ref, stage: h.stage, outputFrames: h.outputStart..<h.outputEnd, decodedFrames: h.decodedStart..<h.decodedEnd,
                framePTS: h.framePTS, frameRate: h.frameRate, encoder: h.encoder, input: bundle,
                audio: AudioWindow(startSample: h.audioStart, samples: samples), sourceFace: h.hasFace ? f[5] : nil, model: h.model))
        case "PROGRESS":
            try expectFrames(3)
            let h = try header(ProgressHeader.self)
            return .progress(h.ref, framesDone: h.framesDone, framesTotal: h.framesTotal)
        case "RESULT":
            try expectFrames(4)
            let h = try header(ResultHeader.self)
            return .result(h.ref, output: try PacketBundle(decoding: f[3]), stats: h.stats)
        case "FAILED":
            try expectFrames(3)
            let h = try header(FailedHeader.self)
            return .failed(h.ref, h.failure)
        case "CANCEL":
            try expectFrames(3)
            return .cancel(try header(RefHeader.self).ref)
        case "HEARTBEAT":
            try expectFrames(3)
            return .heartbeat
        case "DISCONNECT":
            try expectFrames(3)
            return .disconnect(reason: try header(DisconnectHeader.self).reason)
        default:
            throw DubfarmError(.protocolViolation, "unknown command '\(command)'")
        }
    }
}
