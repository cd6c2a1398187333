import ArgumentParser
import DubfarmCore
import DurableFiles
import FarmClient
import FarmProtocol
import FarmStore
import Foundation
import LocalFarm
import MediaPipeline
import Synchronization
import ZeroMQ

/// Benchmarks behind `make bench`: they print figures, they assert nothing.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure the farm (used by `make bench`).",
        shouldDisplay: false, subcommands: [StoreBenchCommand.self, DispatchBench.self, MediaBench.self, DubBench.self])
}

struct StoreBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Segment state transitions per second through the store.")
    @Option(name: .long, help: "PostgreSQL URL.") var database: String
    @Option(name: .long, help: "Transitions to make (per configuration measured).") var count: Int = 4000
    @Option(name: .long, help: "Runs of each configuration; the median is printed.") var runs: Int = 3

    func run() async throws {
        // The coordinator's own configuration first (database.async_segment_commits defaults to
        // true; each result completes its segment and claims the worker's next in one round
        // trip), then the same calls with every commit waiting for its WAL flush, then separate
        // claim and completion calls.
        let configurations: [(async: Bool, mode: StoreBench.Mode, what: String)] = [
            (true, .chained, "as the coordinator runs (async_segment_commits = true, complete-then-claim)"),
            (false, .chained, "durable commits (async_segment_commits = false, complete-then-claim)"),
            (true, .calls, "async_segment_commits = true, separate claim and complete calls"),
            (false, .calls, "durable commits, separate claim and complete calls"),
        ]
        for c in configurations {
            let store = FarmStore(url: database, actor: "bench", asyncSegmentCommits: c.async)
            try await store.connect(retryFor: 10)
            _ = try await store.migrate()
            var reports: [StoreBench.Report] = []
            for _ in 0..<max(1, runs) { reports.append(try await StoreBench.transitions(store: store, count: count, mode: c.mode)) }
            await store.close()
            let sorted = reports.sorted { $0.transitionsPerSecond < $1.transitionsPerSecond }
            let all = sorted.map { String(Int($0.transitionsPerSecond.rounded())) }.joined(separator: ", ")
            print("store: \(Int(sorted[sorted.count / 2].transitionsPerSecond.rounded())) transitions/s median of \(sorted.count) (\(all)); \(c.what)")
        }
    }
}

/// Fake workers that answer every task at once with the task's own packets: all the coordinator's
/// work (lease, cut, fencing check, store, completion) with none of a stage's.
struct DispatchBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Dispatch latency and transitions per second against a running coordinator, with no-op workers.",
        discussion: """
            Needs a coordinator whose segments are one frame long and without context \
            (DUBFARM_SEGMENTS_SECONDS=0.04 DUBFARM_SEGMENTS_CONTEXT_FRAMES=0 at 25 fps) and an all-intra \
            input (every packet a keyframe), so a task's packet is a valid one-frame segment.
            """)
    @Option(name: .long, help: "The coordinator's work endpoint.") var work: String
    @Option(name: .long, help: "The coordinator's control endpoint.") var control: String
    @Option(name: .long, help: "No-op workers.") var workers: Int = 4
    @Option(name: .long, help: "All-intra input video.") var video: String
    @Option(name: .long, help: "Dub track.") var audio: String
    /// One key pair for the fake workers and the client: it must be in both allow-lists.
    @OptionGroup var curveOptions: CurveOptions

    func run() throws {
        let state = BenchState()
        let curve = try curveOptions.resolve()
        var threads: [Thread] = []
        for i in 0..<workers {
            let t = Thread { [work] in
                do { try Self.fakeWorker(endpoint: work, name: "noop-\(i)", curve: curve, state: state) } catch {
                    FileHandle.standardError.write(Data("noop-\(i): \(error)\n".utf8))
                }
            }
            t.start()
            threads.append(t)
        }
        let client = try ControlClient(endpoint: control, timeout: 60, curve: curve)
        Thread.sleep(forTimeInterval: 1)
        let v = try client.upload(path: video), a = try client.upload(path: audio)
        let started = Date()
        let job = try client.call(.submit(SubmitSpec(video: v, audio: a, videoName: "bench.mp4", audioName: "bench.wav",
                                                     stage: "passthrough")), as: JobView.self)
        // Polled through the job list, not `status`: a status reply lists every segment (1,500
        // here), and encoding it 20 times a second would cost the coordinator more CPU than the
        // dispatching being measured. The span itself is timed by the fake workers.
        var view = job
        repeat {
            Thread.sleep(forTimeInterval: 0.2)
            view = try client.call(.jobs(JobsQuery(limit: 20)), as: [JobView].self).first { $0.id == job.id } ?? view
            guard Date().timeIntervalSince(started) < 300 else {
                throw DubfarmError(.timeout, "the dispatch benchmark made no progress in 300 s (job \(job.id) is \(view.state))")
            }
        } while !view.state.isTerminal && view.state != .stitching
        state.stop.store(true, ordering: .relaxed)
        let (first, last) = state.span.withLock { ($0.first ?? Date(), $0.last ?? Date()) }
        let dispatchSeconds = max(last.timeIntervalSince(first), 1e-6)
        let segs = view.segments.total
        let l = state.latencies.withLock { $0 }.sorted()
        func pct(_ p: Double) -> Double { l.isEmpty ? 0 : l[min(l.count - 1, Int(Double(l.count) * p))] * 1000 }
        print("dispatch: \(segs) one-frame segments, \(workers) no-op workers, job \(view.state)")
        print(String(format: "dispatch: %.0f segment transitions/s (pending→leased→done, %d transitions in %.2f s)",
                     Double(2 * segs) / dispatchSeconds, 2 * segs, dispatchSeconds))
        print(String(format: "dispatch: latency result→next task: median %.2f ms, p90 %.2f ms, p99 %.2f ms (%d samples)",
                     pct(0.5), pct(0.9), pct(0.99), l.count))
    }

    final class BenchState: Sendable {
        let latencies = Mutex<[Double]>([])
        let stop = Atomic<Bool>(false)
        /// First task received and last result sent, over all fake workers.
        let span = Mutex<(first: Date?, last: Date?)>((nil, nil))
    }

    static func fakeWorker(endpoint: String, name: String, curve: (serverKey: String, keys: CurveKeyPair)?, state: BenchState) throws {
        let s = try ZMQSocket(.dealer)
        if let curve {
            try s.setCurveClient(serverKey: curve.serverKey, publicKey: curve.keys.publicKey, secretKey: curve.keys.secretKey)
        }
        try s.setRoutingID(Array("\(name)#\(getpid())".utf8))
        try s.connect(endpoint)
        let hello = WorkerHello(name: name, host: "bench", pid: Int(getpid()), threads: 1, stage: "passthrough", version: DubfarmVersion.current)
        try s.send(WorkMessage.ready(hello).encode(), wait: true)
        var poller = ZMQPoller([.socket(s)])
        var sentAt = Date()
        var lastBeat = Date()
        while !state.stop.load(ordering: .relaxed) {
            _ = try poller.poll(timeoutMilliseconds: 100)
            while let frames = try s.receive() {
                guard case .task(let t) = try WorkMessage.decode(frames) else { continue }
                state.latencies.withLock { $0.append(Date().timeIntervalSince(sentAt)) }
                state.span.withLock { if $0.first == nil { $0.first = Date() } }
                // The packet of the output frame, stamped as the farm's segments are.
                let want = t.framePTS[t.outputFrames.lowerBound - t.decodedFrames.lowerBound]
                guard var p = t.input.packets.first(where: { $0.pts == want }) else { continue }
                p.pts = Int64(t.outputFrames.lowerBound)
                p.dts = p.pts
                p.duration = 1
                var codec = t.input.codec
                codec.timeBase = t.frameRate.inverted
                let result = WorkMessage.result(t.ref, output: PacketBundle(codec: codec, packets: [p]), stats: SegmentStats(frames: 1))
                sentAt = Date()
                try s.send(result.encode(), wait: true)
                state.span.withLock { $0.last = Date() }
            }
            if Date().timeIntervalSince(lastBeat) > 0.5 {
                lastBeat = Date()
                try s.send(WorkMessage.heartbeat.encode(), wait: true)
            }
        }
    }
}

struct MediaBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "media",
        abstract: "The coordinator's media work on one file: index + cut every segment + store + stitch.",
        discussion: "The input must have no B-frames and a keyframe at every segment start, so the cut packets are themselves valid segments.")
    @Option(name: .long, help: "Input video.") var input: String
    @Option(name: .long, help: "Dub track to mux (omit for video only).") var audio: String?
    @Option(name: .long, help: "Segment length in seconds.") var segmentSeconds: Double = 10
    @Option(name: .long, help: "Scratch directory.") var scratch: String = NSTemporaryDirectory()

    func run() throws {
        let dir = URL(fileURLWithPath: scratch).appendingPathComponent("media-bench-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let t0 = Date()
        let indexed = try SourceIndexer.index(path: input)
        let rate = indexed.info.frameRate
        let spans = SegmentPlanner.plan(frameCount: indexed.index.frameCount, frameRate: rate, segmentSeconds: segmentSeconds)
        let source = try SourceVideo(path: input, codec: indexed.codec, index: indexed.index)
        let t1 = Date()
        var parts: [StitchSegment] = []
        let log = try ResultLog(path: dir.appendingPathComponent("results.dfrl").path)
        var codec = indexed.codec
        codec.timeBase = rate.inverted
        var cutSeconds = 0.0, writeSeconds = 0.0
        for span in spans {
            let c0 = Date()
            let (bundle, window) = try SegmentCutter.cut(source, frames: span.frames, context: 0)
            cutSeconds += Date().timeIntervalSince(c0)
            guard window.packets.count == span.frames.count else {
                throw DubfarmError(.badInput, "\(input): segment \(span.index) does not start on a keyframe; make the input with -g \(span.frames.count) -bf 0")
            }
            // What a worker would return: the segment's frames, pts = absolute frame index.
            let packets = bundle.packets.enumerated().map { i, p in
                EncodedPacket(pts: Int64(span.frames.lowerBound + i), dts: Int64(span.frames.lowerBound + i), duration: 1, isKey: p.isKey, data: p.data)
            }
            // As the coordinator stores a result: a record of the job's result log, written
            // piecewise (no encoded copy) and fdatasynced.
            let w0 = Date()
            let record = try log.append(PacketBundle(codec: codec, packets: packets), segment: span.index, token: .random())
            writeSeconds += Date().timeIntervalSince(w0)
            parts.append(StitchSegment(path: log.path, record: record))
        }
        let t2 = Date()
        let report = try Stitcher.stitch(StitchRequest(segments: parts, audioPath: audio, outputPath: dir.appendingPathComponent("out.mp4").path,
                                                       expectedFrameCount: indexed.index.frameCount, frameRate: rate))
        let t3 = Date()
        print(String(format: "media: %d frames, %d segments: index %.2f s, cut+store %.2f s, stitch %.2f s, total %.2f s (%@)",
                     report.framesWritten, spans.count, t1.timeIntervalSince(t0), t2.timeIntervalSince(t1), t3.timeIntervalSince(t2),
                     t3.timeIntervalSince(t0), audio == nil ? "video only" : "with AAC dub"))
        print(String(format: "media: cut %.2f s, write results %.2f s", cutSeconds, writeSeconds))
        print(String(format: "media-total-seconds %.3f", t3.timeIntervalSince(t0)))
    }
}
