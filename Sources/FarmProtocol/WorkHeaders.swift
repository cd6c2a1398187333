import DubfarmCore

// The work protocol's headers in binary: little-endian fixed-width numbers and length-prefixed
// strings and arrays (``DubfarmCore/ByteWriter``), every length checked against what is left
// before anything is allocated (``DubfarmCore/ByteReader``). A header must be read to its last
// byte. JSON headers cost the coordinator more CPU than anything else it does per segment but
// the database; the control protocol, used by people and scripts, stays JSON.

/// Longest name-like string in a header (worker, host, stage, model, version, step names).
let maxNameBytes = 1024
/// Longest free text in a header (a failure's message, a disconnect's reason).
let maxTextBytes = 64 << 10

extension TaskRef {
    func write(_ w: inout ByteWriter) {
        w.i64(segment.job.rawValue)
        w.int(segment.index)
        w.u64(token.high)
        w.u64(token.low)
    }
    static func read(_ r: inout ByteReader) throws -> TaskRef {
        let job = JobID(try r.i64())
        let index = try r.int(in: 0...Int(Int32.max), "segment index")
        return TaskRef(segment: SegmentRef(job: job, index: index), token: LeaseToken(high: try r.u64(), low: try r.u64()))
    }
}

extension WorkerHello {
    func write(_ w: inout ByteWriter) {
        w.string(name)
        w.string(host)
        w.int(pid)
        w.int(threads)
        w.string(stage)
        w.optionalString(model)
        w.u32(UInt32(capabilities.count))
        for c in capabilities { w.string(c) }
        w.string(version)
        w.bool(busyWith != nil)
        busyWith?.write(&w)
        w.bool(busyTraining != nil)
        if let busyTraining {
            busyTraining.write(&w)
            w.int(busyTrainingRank)
        }
    }
    static func read(_ r: inout ByteReader) throws -> WorkerHello {
        let name = try r.string(max: maxNameBytes), host = try r.string(max: maxNameBytes)
        let pid = try r.int(), threads = try r.int(in: 0...65_536, "threads")
        let stage = try r.string(max: maxNameBytes), model = try r.optionalString(max: maxNameBytes)
        var capabilities: [String] = []
        for _ in 0..<(try r.count(minElementSize: 4, max: 1024)) { capabilities.append(try r.string(max: maxNameBytes)) }
        let version = try r.string(max: maxNameBytes)
        let busy = try r.bool() ? try TaskRef.read(&r) : nil
        var training: TrainRef?, rank = 0
        if try r.bool() {
            training = try TrainRef.read(&r)
            rank = try r.int(in: 0...1023, "training rank")
        }
        return WorkerHello(name: name, host: host, pid: pid, threads: threads, stage: stage, model: model,
                           capabilities: capabilities, version: version, busyWith: busy, busyTraining: training, busyTrainingRank: rank)
    }
}

extension SegmentStats {
    func write(_ w: inout ByteWriter) {
        w.int(frames)
        w.int(framesWithFace)
        w.int(framesSwapped)
        w.f64(decodeSeconds)
        w.f64(stageSeconds)
        w.f64(encodeSeconds)
        w.f64(totalSeconds)
        w.bool(steps != nil)
        if let steps {
            w.u32(UInt32(steps.count))
            for s in steps {
                w.string(s.step)
                w.f64(s.msPerFrame)
            }
        }
    }
    static func read(_ r: inout ByteReader) throws -> SegmentStats {
        var s = SegmentStats(frames: try r.int(), framesWithFace: try r.int(), framesSwapped: try r.int(),
                             decodeSeconds: try r.f64(), stageSeconds: try r.f64(), encodeSeconds: try r.f64(), totalSeconds: try r.f64())
        if try r.bool() {
            var steps: [StepTiming] = []
            for _ in 0..<(try r.count(minElementSize: 12, max: 256)) {
                steps.append(StepTiming(step: try r.string(max: maxNameBytes), msPerFrame: try r.f64()))
            }
            s.steps = steps
        }
        return s
    }
}

extension FailureReport {
    func write(_ w: inout ByteWriter) {
        w.string(code)
        w.string(message)
        w.bool(handedBack)
    }
    static func read(_ r: inout ByteReader) throws -> FailureReport {
        FailureReport(code: try r.string(max: maxNameBytes), message: try r.string(max: maxTextBytes), handedBack: try r.bool())
    }
}
