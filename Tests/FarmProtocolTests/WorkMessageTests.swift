import DubfarmCore
import Foundation
import Testing
@testable import FarmProtocol

let sampleCodec = CodecParameters(codecName: "h264", extradata: [1, 100, 0, 31, 255], width: 844, height: 844,
                                  pixelFormat: "yuv420p", timeBase: Rational(1, 12800), frameRate: Rational(25, 1))

func sampleTask() -> TaskAssignment {
    var packets: [EncodedPacket] = []
    for i in 0..<20 {
        let data: [UInt8] = (0..<(i * 7 + 1)).map { (b: Int) -> UInt8 in UInt8(truncatingIfNeeded: b &* 31 &+ i) }
        let pts = Int64(i * 512)
        packets.append(EncodedPacket(pts: pts, dts: pts - 1024, duration: 512, isKey: i == 0, data: data))
    }
    return TaskAssignment(
        ref: TaskRef(segment: SegmentRef(job: JobID(7), index: 2), token: .random()), stage: "passthrough",
        outputFrames: 4..<16, decodedFrames: 2..<18, framePTS: (2..<18).map { Int64($0 * 512) },
        frameRate: Rational(25, 1), encoder: EncoderSettings(), input: PacketBundle(codec: sampleCodec, packets: packets),
        audio: AudioWindow(startSample: -400, samples: (0..<1000).map { Float($0) / 1000 }), sourceFace: [0x89, 0x50, 0x4e, 0x47],
        model: "small")
}

func allWorkMessages() -> [WorkMessage] {
    let ref = TaskRef(segment: SegmentRef(job: JobID(3), index: 1), token: .random())
    let hello = WorkerHello(name: "w1", host: "render-7", pid: 1234, threads: 2, stage: "dub", model: "small",
                            capabilities: ["stage:dub"], version: "0.1.0", busyWith: ref)
    return [
        .ready(hello), .task(sampleTask()), .progress(ref, framesDone: 10, framesTotal: 250),
        .result(ref, output: PacketBundle(codec: sampleCodec, packets: [EncodedPacket(pts: 0, dts: 0, duration: 1, isKey: true, data: [1, 2, 3])]),
                stats: SegmentStats(frames: 250, framesWithFace: 240, framesSwapped: 0, decodeSeconds: 0.5, stageSeconds: 1, encodeSeconds: 2, totalSeconds: 3.5)),
        .partial(ref, frames: 1, output: PacketBundle(codec: sampleCodec, packets: [EncodedPacket(pts: 250, dts: 250, duration: 1, isKey: true, data: [4, 5])]),
                 stats: SegmentStats(frames: 1, totalSeconds: 0.2)),
        .failed(ref, FailureReport(code: "badInput", message: "decoder error at frame 17")),
        .failed(ref, FailureReport(code: "cancelled", message: "worker stopping", handedBack: true)),
        .cancel(ref), .heartbeat, .disconnect(reason: "SIGTERM"),
    ] + personaliseMessages()
}

let sampleSHA = String(repeating: "0123456789abcdef", count: 4)

func sampleTrain(checkpoint: Bool = true) -> TrainAssignment {
    TrainAssignment(ref: TrainRef(job: JobID(9), token: .random()), budgetSeconds: 300, checkpointSeconds: 60, attempt: 2,
                    dataset: [NamedFile(name: "index.json", bytes: Array(#"{"format":"dubfarm-dataset/1"}"#.utf8)),
                              NamedFile(name: "shard-00000.safetensors", bytes: (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }),
                              NamedFile(name: "empty", bytes: [])],
                    checkpoint: checkpoint ? [1, 2, 3, 4] : nil, checkpointStep: checkpoint ? 120 : nil)
}

func gangTrain(rank: Int, size: Int, endpoint: String = "10.0.0.5:29500") -> TrainAssignment {
    var t = sampleTrain()
    t.gang = TrainGang(rank: rank, size: size, endpoint: endpoint)
    return t
}

/// The messages of per-job personalisation (protocol versions 3 and 4).
func personaliseMessages() -> [WorkMessage] {
    let ref = TrainRef(job: JobID(9), token: .random())
    var weighted = sampleTask()
    weighted.weights = sampleSHA
    return [
        .task(weighted), .weights(sha256: sampleSHA, bytes: [9, 8, 7]), .train(sampleTrain()), .train(sampleTrain(checkpoint: false)),
        .trainProgress(ref, TrainProgress(step: 17, loss: 0.25, elapsed: 12.5)),
        .trainProgress(ref, TrainProgress(step: 0, loss: nil, elapsed: 0)),
        .checkpoint(ref, TrainProgress(step: 40, loss: 0.2, elapsed: 61), bytes: [5, 5, 5]),
        .trained(ref, TrainProgress(step: 300, loss: 0.1, elapsed: 300), report: #"{"event":"done"}"#, weights: [1, 2]),
        .trainFailed(ref, FailureReport(code: "badInput", message: "no face")), .cancelTrain(ref),
        .train(gangTrain(rank: 0, size: 3)), .train(gangTrain(rank: 2, size: 3, endpoint: "[fd00::7]:29511")),
        .trainLeft(ref, error: nil), .trainLeft(ref, error: "the trainer exited with status 1: rank 1 of 2 lost its peers"),
    ]
}

@Suite("Work protocol codec: personalisation")
struct PersonaliseMessageTests {
    @Test("a TRAIN carries the dataset's files, in order and byte for byte, and the checkpoint with its step")
    func trainFiles() throws {
        let t = sampleTrain()
        guard case .train(let back) = try WorkMessage.decode(WorkMessage.train(t).encode()) else { Issue.record("not a TRAIN"); return }
        #expect(back.dataset.map(\.name) == ["index.json", "shard-00000.safetensors", "empty"])
        #expect(back.dataset == t.dataset && back.checkpoint == [1, 2, 3, 4] && back.checkpointStep == 120)
    }

    @Test("a dataset file name that is a path is refused (a worker writes the files under these names)")
    func pathNames() throws {
        for bad in ["../evil", "a/b", ".hidden", ""] {
            var t = sampleTrain()
            t.dataset[0].name = bad
            #expect(throws: DubfarmError.self) { try WorkMessage.decode(WorkMessage.train(t).encode()) }
        }
    }

    @Test("sizes that disagree with the body, or a checkpoint without its step, are refused")
    func inconsistent() throws {
        var frames = WorkMessage.train(sampleTrain()).encode()
        frames[3].removeLast()
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
        frames = WorkMessage.train(sampleTrain()).encode()
        frames[3].append(0)
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
        frames = WorkMessage.train(sampleTrain(checkpoint: false)).encode()
        frames[4] = [1]
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
    }

    @Test("WEIGHTS names a SHA-256: anything else is refused")
    func weightsName() throws {
        var frames = WorkMessage.weights(sha256: sampleSHA, bytes: [1]).encode()
        var w = ByteWriter()
        w.string("../../etc/passwd")
        frames[2] = w.bytes
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
        #expect(WorkMessage.isSHA256(sampleSHA) && !WorkMessage.isSHA256(sampleSHA.uppercased()) && !WorkMessage.isSHA256("abc"))
    }

    @Test("a worker says it can personalise in READY")
    func capability() throws {
        let hello = WorkerHello(name: "w", host: "h", pid: 1, threads: 2, stage: "dub", capabilities: ["stage:dub", "personalise"], version: "v")
        guard case .ready(let back) = try WorkMessage.decode(WorkMessage.ready(hello).encode()) else { Issue.record("not READY"); return }
        #expect(back.canPersonalise && back.personaliseDevice == "cpu" && back.rendezvous == nil)
        let gpu = WorkerHello(name: "g", host: "h", pid: 1, threads: 2, stage: "dub",
                              capabilities: ["personalise", "personalise-device:cuda", "rendezvous:10.1.2.3:29517"], version: "v")
        #expect(gpu.personaliseDevice == "cuda" && gpu.rendezvous == "10.1.2.3:29517")
        // A worker still fine-tuning says so, with its rank, when it says READY again.
        var training = hello
        training.busyTraining = TrainRef(job: JobID(3), token: .random())
        training.busyTrainingRank = 2
        guard case .ready(let again) = try WorkMessage.decode(WorkMessage.ready(training).encode()) else { Issue.record("not READY"); return }
        #expect(again.busyTraining == training.busyTraining && again.busyTrainingRank == 2 && again.busyWith == nil)
    }

    @Test("a TRAIN's gang must be a rank below its size at HOST:PORT; one worker alone has rank 0 and no endpoint")
    func gang() throws {
        guard case .train(let back) = try WorkMessage.decode(WorkMessage.train(gangTrain(rank: 1, size: 2)).encode()) else {
            Issue.record("not a TRAIN"); return
        }
        #expect(back.gang == TrainGang(rank: 1, size: 2, endpoint: "10.0.0.5:29500"))
        #expect(back.gang?.hostAndPort?.host == "10.0.0.5" && back.gang?.hostAndPort?.port == 29500)
        #expect(TrainGang(rank: 0, size: 2, endpoint: "[fd00::7]:29511").hostAndPort?.host == "fd00::7")
        for bad in [gangTrain(rank: 2, size: 2), gangTrain(rank: 0, size: 2, endpoint: "nohost"), gangTrain(rank: 0, size: 2, endpoint: "h:0"),
                    gangTrain(rank: 0, size: 2, endpoint: "h:99999"), gangTrain(rank: 0, size: 2, endpoint: ":29500")] {
            #expect(throws: DubfarmError.self) { try WorkMessage.decode(WorkMessage.train(bad).encode()) }
        }
        // A gang of one is written as none.
        guard case .train(let alone) = try WorkMessage.decode(WorkMessage.train(gangTrain(rank: 0, size: 1)).encode()) else {
            Issue.record("not a TRAIN"); return
        }
        #expect(alone.gang == nil)
    }
}

@Suite("Work protocol codec")
struct WorkMessageTests {
    @Test("every command survives a round trip", arguments: allWorkMessages())
    func roundTrip(message: WorkMessage) throws {
        let frames = message.encode()
        #expect(frames[0] == Array("DUBFARM-WORK/6".utf8))
        #expect(try WorkMessage.decode(frames) == message)
    }

    @Test("a task without a face and without audio round-trips")
    func bareTask() throws {
        var t = sampleTask()
        t.sourceFace = nil
        t.audio = AudioWindow(startSample: 0, samples: [])
        t.model = nil
        #expect(try WorkMessage.decode(WorkMessage.task(t).encode()) == .task(t))
    }

    @Test("a task carries the video's rotation (protocol 5); only quarter turns are accepted")
    func rotation() throws {
        for degrees in [0, 90, 180, 270] {
            var t = sampleTask()
            t.rotation = degrees
            #expect(try WorkMessage.decode(WorkMessage.task(t).encode()) == .task(t))
        }
        var frames = WorkMessage.task(sampleTask()).encode()
        // The rotation is the header's last field: make it 45°.
        frames[2].replaceSubrange((frames[2].count - 2)..., with: [45, 0])
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
        frames[2].removeLast(2)   // a version 4 header, without it
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(frames) }
    }

    @Test("malformed messages are rejected with a reason")
    func malformed() throws {
        let good = WorkMessage.task(sampleTask()).encode()
        let v2 = Array(ProtocolName.work.utf8)
        let ready = WorkMessage.ready(WorkerHello(name: "w", host: "h", pid: 1, threads: 1, stage: "dub", version: "v")).encode()
        var cases: [(String, [[UInt8]])] = [
            ("empty", []),
            ("only protocol", [v2]),
            ("wrong protocol", [Array("DUBFARM-WORK/9".utf8), Array("HEARTBEAT".utf8), []]),
            ("version 1 (JSON headers)", [Array("DUBFARM-WORK/1".utf8), Array("HEARTBEAT".utf8), Array("{}".utf8)]),
            ("unknown command", [v2, Array("EXPLODE".utf8), []]),
            ("heartbeat with a header", [v2, Array("HEARTBEAT".utf8), [0]]),
            ("extra frame", [v2, Array("HEARTBEAT".utf8), [], [1]]),
            ("binary command", [v2, [0xff, 0xfe], []]),
            ("truncated header", [ready[0], ready[1], Array(ready[2].dropLast(3))]),
            ("bytes after the header", [ready[0], ready[1], ready[2] + [0]]),
            ("a string longer than the header", [v2, Array("READY".utf8), [0xff, 0xff, 0xff, 0x7f, 0x41]]),
            ("a name that is not UTF-8", [v2, Array("DISCONNECT".utf8), [2, 0, 0, 0, 0xff, 0xfe]]),
            ("a boolean that is neither 0 nor 1", [ready[0], ready[1], Array(ready[2].dropLast()) + [7]]),
        ]
        var truncatedBundle = good
        truncatedBundle[3].removeLast(5)
        cases.append(("truncated bundle", truncatedBundle))
        var badAudio = good
        badAudio[4] = [9, 0, 0, 0, 1]
        cases.append(("bad audio", badAudio))
        var noFace = good
        noFace[5] = []
        cases.append(("face mismatch", noFace))
        // Ranges a real task never has: decoding starts after the output does.
        var inconsistent = sampleTask()
        inconsistent.decodedFrames = 5..<18
        inconsistent.framePTS = Array(inconsistent.framePTS.dropFirst(3))
        cases.append(("inconsistent ranges", WorkMessage.task(inconsistent).encode()))
        // A frame count far beyond what the header holds.
        var hugeCount = good
        let countAt = 8 + 8 + 16 + 4 + "passthrough".utf8.count + 4 * 8
        hugeCount[2].replaceSubrange(countAt..<countAt + 4, with: [0xff, 0xff, 0xff, 0x00])
        cases.append(("huge frame count", hugeCount))
        // A partial result of no frames (that is a hand-back: FAILED).
        var empty = WorkMessage.partial(TaskRef(segment: SegmentRef(job: JobID(1), index: 0), token: .random()), frames: 1,
                                        output: PacketBundle(codec: sampleCodec, packets: []), stats: SegmentStats(frames: 0)).encode()
        empty[2].replaceSubrange((8 + 8 + 16)..<(8 + 8 + 16 + 8), with: [UInt8](repeating: 0, count: 8))
        cases.append(("partial of no frames", empty))
        for (name, frames) in cases {
            let accepted = (try? WorkMessage.decode(frames)) != nil
            #expect(!accepted, "\(name) was accepted")
        }
    }

    @Test("payloads above the configured limit are refused")
    func limits() {
        var limits = ProtocolLimits()
        limits.maxPayloadBytes = 100
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(WorkMessage.task(sampleTask()).encode(), limits: limits) }
        limits = ProtocolLimits()
        limits.maxHeaderBytes = 10
        let ready = WorkMessage.ready(WorkerHello(name: "w", host: "h", pid: 1, threads: 1, stage: "s", version: "v")).encode()
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(ready, limits: limits) }
    }

    @Test("seeded fuzz: random and mutated messages never crash the decoder")
    func fuzz() {
        var rng = SplitMix64(seed: 0x5eed)
        let seeds = allWorkMessages().map { $0.encode() }
        var accepted = 0
        for i in 0..<20_000 {
            var frames = seeds[i % seeds.count]
            switch rng.next() % 4 {
            case 0:  // flip bytes
                for _ in 0..<(1 + rng.next() % 8) {
                    let fi = Int(rng.next() % UInt64(frames.count))
                    guard !frames[fi].isEmpty else { continue }
                    let bi = Int(rng.next() % UInt64(frames[fi].count))
                    frames[fi][bi] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                }
            case 1:  // truncate a frame
                let fi = Int(rng.next() % UInt64(frames.count))
                frames[fi] = Array(frames[fi].prefix(Int(rng.next() % UInt64(frames[fi].count + 1))))
            case 2:  // drop or duplicate frames
                if rng.next() % 2 == 0, frames.count > 1 { frames.remove(at: Int(rng.next() % UInt64(frames.count))) }
                else { frames.append(frames[Int(rng.next() % UInt64(frames.count))]) }
            default:  // random garbage after the protocol frame
                var garbage: [[UInt8]] = [frames[0]]
                for _ in 0..<(rng.next() % 5) {
                    var f: [UInt8] = []
                    for _ in 0..<(rng.next() % 64) { f.append(UInt8(truncatingIfNeeded: rng.next())) }
                    garbage.append(f)
                }
                frames = garbage
            }
            if (try? WorkMessage.decode(frames)) != nil { accepted += 1 }
        }
        // Some mutations land in ignorable places (a stat value, a payload byte); most must be refused.
        #expect(accepted < 20_000)
    }
}

/// A tiny deterministic generator for reproducible fuzzing.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
