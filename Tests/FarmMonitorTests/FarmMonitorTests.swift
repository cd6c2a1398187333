import DubfarmCore
import FarmMonitor
import FarmProtocol
import FarmTestSupport
import Foundation
import Monitoring
import Testing

func job(_ id: Int64, _ state: JobState, frames: Int? = 1000, done: Int = 0, segments: (total: Int, done: Int, leased: Int) = (10, 0, 0),
         video: String = "talk.mp4") -> JobView {
    var j = JobView(id: id, state: state, priority: 0, createdAt: Date(timeIntervalSince1970: 0), updatedAt: Date(timeIntervalSince1970: 0),
                    video: video, audio: "dub.wav", face: nil, stage: "dub")
    j.frames = frames
    j.framesDone = done
    j.segments.total = segments.total
    j.segments.done = segments.done
    j.segments.leased = segments.leased
    j.segments.pending = segments.total - segments.done - segments.leased
    return j
}

func worker(_ name: String, state: String = "busy", current: String? = "1/0", frames: Int = 0, lastSeen: Date) -> WorkerView {
    WorkerView(name: name, host: "render-\(name)", state: state, threads: 2, stage: "dub", model: nil, current: current,
               connectedAt: lastSeen, lastSeen: lastSeen, segmentsDone: 0, framesDone: frames)
}

@Suite("Monitoring views")
struct FarmMonitorTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("queue depth counts jobs and segments by state, every state present")
    func queueDepth() {
        let q = QueueDepth(jobs: [job(1, .running, segments: (10, 4, 2)), job(2, .queued, frames: nil, segments: (0, 0, 0)),
                                  job(3, .done, done: 1000, segments: (10, 10, 0))])
        #expect(q.jobs == ["queued": 1, "planning": 0, "personalising": 0, "running": 1, "stitching": 0, "done": 1, "failed": 0, "cancelled": 0])
        #expect(q.segments == ["pending": 4, "leased": 2, "done": 14, "dead": 0, "cancelled": 0])
    }

    @Test("rates: frames per second per job and worker, ETA from the frames left; none before a second has passed")
    func rates() {
        var tracker = RateTracker()
        let a = tracker.observe(FarmSnapshot(at: t0, jobs: [job(1, .running, done: 100)],
                                             workers: [worker("w1", frames: 50, lastSeen: t0), worker("w2", frames: 50, lastSeen: t0)]))
        #expect(a.rates.framesPerSecond == nil)
        #expect(a.rates.jobs.isEmpty)
        let b = tracker.observe(FarmSnapshot(at: t0.addingTimeInterval(2), jobs: [job(1, .running, done: 140)],
                                             workers: [worker("w1", frames: 70, lastSeen: t0), worker("w2", frames: 70, lastSeen: t0)]))
        #expect(b.rates.framesPerSecond == 20)
        #expect(b.rates.workers == ["w1": 10, "w2": 10])
        #expect(b.rates.jobs["1"] == JobRate(framesPerSecond: 20, etaSeconds: 43))   // (1000 - 140) / 20
        // Old samples leave the window: the rate follows the recent speed.
        var c = b
        for k in 3...20 {
            c = tracker.observe(FarmSnapshot(at: t0.addingTimeInterval(Double(k)), jobs: [job(1, .running, done: 140 + (k - 2) * 5)], workers: []))
        }
        #expect(abs((c.rates.jobs["1"]?.framesPerSecond ?? 0) - 5) < 0.01)
    }

    @Test("top fills exactly the terminal: every line as wide as it, as many lines as rows")
    func fitsTerminal() {
        let s = FarmSnapshot(at: t0, jobs: (1...30).map { job(Int64($0), .running, done: $0 * 30, segments: (10, $0 % 10, 1)) },
                             workers: (1...12).map { worker("w\($0)", lastSeen: t0) })
        for size in [TerminalSize(columns: 120, rows: 40), TerminalSize(columns: 80, rows: 24), TerminalSize(columns: 40, rows: 10),
                     TerminalSize(columns: 200, rows: 60)] {
            let lines = TopRenderer(coordinator: "tcp://c:5556").render(s, size: size, now: t0)
            #expect(lines.count == size.rows, "\(size)")
            #expect(lines.allSatisfy { $0.count == size.columns }, "\(size)")
            #expect(lines.last!.hasPrefix("q quit"))
        }
        // A small terminal says how many rows did not fit.
        let small = TopRenderer(coordinator: "c").render(s, size: TerminalSize(columns: 100, rows: 20), now: t0)
        #expect(small.contains { $0.contains("more") })
    }

    @Test("top shows each job's state, progress bar, segments, fps and ETA, and each worker's segment, fps and heartbeat")
    func content() throws {
        var tracker = RateTracker()
        _ = tracker.observe(FarmSnapshot(at: t0, jobs: [job(7, .running, done: 250, segments: (10, 2, 2))],
                                         workers: [worker("w1", current: "7/2", frames: 0, lastSeen: t0)]))
        let s = tracker.observe(FarmSnapshot(at: t0.addingTimeInterval(5), jobs: [job(7, .running, done: 500, segments: (10, 5, 2)), job(6, .done, done: 1000, segments: (10, 10, 0))],
                                             workers: [worker("w1", current: "7/5", frames: 250, lastSeen: t0.addingTimeInterval(4.5)),
                                                       worker("w2", state: "idle", current: nil, lastSeen: t0.addingTimeInterval(5))]))
        let lines = TopRenderer(coordinator: "tcp://c:5556").render(s, size: TerminalSize(columns: 120, rows: 30), now: t0.addingTimeInterval(5))
        let text = lines.joined(separator: "\n")
        let row = try #require(lines.first { $0.hasPrefix("     7") })
        #expect(row.contains("running"))
        #expect(row.contains(" 50%"))
        #expect(row.contains("█") && row.contains("░"))
        #expect(row.contains("5/10"))
        #expect(row.contains("50.0"))          // (500 - 250) / 5 s
        #expect(row.contains("0:10"))          // 500 frames left at 50 fps
        #expect(text.contains("throughput 50.0 fps"))
        let w1 = try #require(lines.first { $0.hasPrefix("w1") })
        #expect(w1.contains("render-w1") && w1.contains("busy") && w1.contains("7/5") && w1.contains("50.0") && w1.contains("0.5s ago"))
        #expect(lines.contains { $0.hasPrefix("w2") && $0.contains("idle") })
        #expect(text.contains("running 1") && text.contains("done 1"))
        // The filter hides other states.
        let onlyDone = TopRenderer(coordinator: "c", filter: .done).render(s, size: TerminalSize(columns: 120, rows: 30), now: t0)
        #expect(!onlyDone.contains { $0.hasPrefix("     7") })
        #expect(onlyDone.contains { $0.hasPrefix("     6") })
        #expect(onlyDone.last!.contains("filter (done)"))
    }

    @Test("a personalising job: its bar is the training budget spent, its phase beside the video, in the screen and in plain lines")
    func personalising() throws {
        var j = job(8, .personalising, segments: (3, 0, 0))
        var p = PersonalisationView(state: "leased", budgetSeconds: 300, fallback: false, elapsedSeconds: 75, step: 42, leases: 1, failures: 0)
        p.loss = 0.0312
        p.worker = "w1"
        j.personalisation = p
        let s = FarmSnapshot(at: t0, jobs: [j], workers: [worker("w1", current: "8/personalise", lastSeen: t0)])
        let lines = TopRenderer(coordinator: "c").render(s, size: TerminalSize(columns: 200, rows: 30), now: t0)
        let row = try #require(lines.first { $0.hasPrefix("     8") })
        #expect(row.contains("personalising") && row.contains(" 25%"), "\(row)")
        #expect(row.contains("personalise: training 25 % of 300 s (step 42, loss 0.0312) on w1"), "\(row)")
        let plain = TopRenderer(coordinator: "c").plainLines(s)
        #expect(plain[1].contains("job 8 personalising") && plain[1].contains("personalise leased step 42 loss 0.0312 elapsed 75/300s"), "\(plain)")
        #expect(plain[2].contains("segment 8/personalise"))
    }

    @Test("the f key cycles through every job state and back to all")
    func filterCycle() {
        var f: JobState? = nil
        var seen: [JobState?] = []
        for _ in 0...JobState.allCases.count { f = TopRenderer.nextFilter(after: f); seen.append(f) }
        #expect(seen.compactMap { $0 } == JobState.allCases)
        #expect(seen.last! == nil)
    }

    @Test("plain lines for pipes: a summary, unfinished jobs and workers")
    func plain() {
        let s = FarmSnapshot(at: t0, jobs: [job(3, .running, done: 10, segments: (4, 1, 1)), job(2, .done, done: 1000)],
                             workers: [worker("w1", current: "3/1", lastSeen: t0)])
        let lines = TopRenderer(coordinator: "c").plainLines(s)
        #expect(lines.count == 3)
        #expect(lines[0].contains("running=1") && lines[0].contains("done=1") && lines[0].contains("workers=1"))
        #expect(lines[1].hasPrefix("job 3 running 1% segments 1/4 frames 10/1000"))
        #expect(lines[2].hasPrefix("worker w1 render-w1 busy segment 3/1"))
    }

    @Test("progress bars and durations")
    func progressBar() {
        #expect(ProgressBar.bar(0.5, width: 10) == "█████░░░░░")
        #expect(ProgressBar.bar(2, width: 4) == "████")
        #expect(ProgressBar.bar(.nan, width: 3) == "░░░")
        #expect(ProgressBar.duration(42) == "0:42")
        #expect(ProgressBar.duration(3725) == "1:02:05")
        #expect(ProgressBar.duration(.infinity) == "--")
        let line = ProgressBar.jobLine(job(1, .running, done: 250, segments: (10, 2, 1)), rate: JobRate(framesPerSecond: 12.5, etaSeconds: 60))
        #expect(line == "running  segments 2/10  frames 250/1000  12.5 fps  ETA 1:00")
    }

    @Test("snapshots round-trip through JSON (the dashboard's /api/farm)")
    func json() throws {
        let s = FarmSnapshot(at: t0, jobs: [job(1, .running)], workers: [worker("w1", lastSeen: t0)],
                             rates: FarmRates(framesPerSecond: 3, jobs: ["1": JobRate(framesPerSecond: 3, etaSeconds: nil)], workers: ["w1": 3]))
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        #expect(try d.decode(FarmSnapshot.self, from: e.encode(s)) == s)
    }
}

@Suite("Prometheus metrics")
struct FarmMetricsTests {
    @Test("the exposition parses strictly and carries the hooks' counts and the database's gauges")
    func exposition() throws {
        let m = FarmMetrics()
        m.segmentCompleted(frames: 250, seconds: 1.5)
        m.segmentCompleted(frames: 100, seconds: 0.2)
        m.segmentFailed(reason: "badInput")
        m.uploaded(bytes: 1000)
        m.uploaded(bytes: 24)
        m.stitched(bytes: 5000)
        m.resultArrived(worker: "w1")
        m.taskSent(worker: "w1")
        m.taskSent(worker: "w1")   // no result waiting: not counted
        m.update(FarmGauges(jobs: ["running": 2, "done": 5], segments: ["pending": 7, "leased": 2], workers: ["busy": 2, "gone": 1]))
        let p = try PrometheusText(m.exposition())
        #expect(p.value("dubfarm_frames_processed_total") == 350)
        #expect(p.value("dubfarm_segments_completed_total") == 2)
        #expect(p.value("dubfarm_segment_failures_total", ["reason": "badInput"]) == 1)
        #expect(p.value("dubfarm_upload_bytes_total") == 1024)
        #expect(p.value("dubfarm_stitch_output_bytes_total") == 5000)
        #expect(p.value("dubfarm_jobs_stitched_total") == 1)
        #expect(p.types["dubfarm_segment_processing_seconds"] == "histogram")
        #expect(p.value("dubfarm_segment_processing_seconds_count") == 2)
        #expect(p.value("dubfarm_segment_processing_seconds_bucket", ["le": "0.25"]) == 1)
        #expect(p.value("dubfarm_dispatch_latency_seconds_count") == 1)
        #expect(p.value("dubfarm_jobs", ["state": "running"]) == 2)
        #expect(p.value("dubfarm_jobs", ["state": "queued"]) == 0)
        #expect(p.value("dubfarm_segments", ["state": "pending"]) == 7)
        #expect(p.value("dubfarm_workers", ["state": "gone"]) == 1)
        #expect(p.value("dubfarm_workers", ["state": "idle"]) == 0)
        #expect(p.value("dubfarm_queue_depth") == 7)
        // Gauges follow the database down as well as up.
        m.update(FarmGauges(jobs: ["done": 7]))
        let q = try PrometheusText(m.exposition())
        #expect(q.value("dubfarm_jobs", ["state": "running"]) == 0)
        #expect(q.value("dubfarm_queue_depth") == 0)
    }

    @Test("the strict parser rejects malformed expositions")
    func parserRejects() {
        let bad = [
            "x 1",                                                   // no final newline
            "1x 1\n",                                                // bad name
            "x{a=\"1\" 1\n",                                         // unterminated labels
            "x{a=\"1\"} one\n",                                      // bad value
            "x 1\nx 2\n",                                            // duplicate series
            "# TYPE x counter\nx -1\n",                              // negative counter
            "x 1\ny 1\nx{a=\"b\"} 1\n",                              // interleaved family
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  // not cumulative
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",                           // no +Inf
            "# TYPE x bogus\nx 1\n",
        ]
        for text in bad { #expect(throws: PrometheusText.ParseError.self, "\(text)") { try PrometheusText(text) } }
        #expect((try? PrometheusText("# HELP x Things.\n# TYPE x gauge\nx{a=\"q\\\"uote\"} 1.5e3 1700000000\n\n"))?.value("x", ["a": "q\"uote"]) == 1500)
    }
}
