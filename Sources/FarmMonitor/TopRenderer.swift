import DubfarmCore
import FarmProtocol
import Foundation

/// A terminal's size in character cells.
package struct TerminalSize: Sendable, Hashable {
    package var columns: Int
    package var rows: Int
    package init(columns: Int, rows: Int) {
        self.columns = columns
        self.rows = rows
    }
}

/// What `dubfarm top` draws: a pure function from a snapshot and the terminal size to lines of
/// exactly `columns` characters (no escape codes; the terminal layer adds those).
package struct TopRenderer: Sendable {
    /// The coordinator's address, shown in the title.
    package var coordinator: String
    /// Only jobs in this state (nil: all).
    package var filter: JobState?

    package init(coordinator: String, filter: JobState? = nil) {
        self.coordinator = coordinator
        self.filter = filter
    }

    /// The next filter in the cycle all → queued → … → cancelled → all (the `f` key).
    package static func nextFilter(after f: JobState?) -> JobState? {
        guard let f, let i = JobState.allCases.firstIndex(of: f) else { return JobState.allCases.first }
        let next = JobState.allCases.index(after: i)
        return next == JobState.allCases.endIndex ? nil : JobState.allCases[next]
    }

    /// Renders the full screen: at most `size.rows` lines, each exactly `size.columns` wide.
    package func render(_ s: FarmSnapshot, size: TerminalSize, now: Date = Date()) -> [String] {
        let width = max(20, size.columns)
        let height = max(5, size.rows)
        var top: [String] = []
        let time = Self.clock(s.at)
        let fps = s.rates.framesPerSecond.map { String(format: "%.1f fps", $0) } ?? "-- fps"
        top.append("dubfarm top  \(coordinator)  \(time)  throughput \(fps)")
        top.append("jobs: " + JobState.allCases.map { "\($0.rawValue) \(s.queue.jobs[$0.rawValue] ?? 0)" }.joined(separator: "  "))
        top.append("segments: " + SegmentState.allCases.map { "\($0.rawValue) \(s.queue.segments[$0.rawValue] ?? 0)" }.joined(separator: "  ")
                   + "   workers: " + ["busy", "idle", "draining"].map { st in "\(st) \(s.workers.filter { $0.state == st }.count)" }.joined(separator: "  "))
        let footer = "q quit  f filter (\(filter?.rawValue ?? "all"))  a all"

        // Jobs table.
        let jobs = s.jobs.filter { filter == nil || $0.state == filter }
        let fixed = 6 + 13 + 6 + 12 + 8 + 9 + 7   // id, state, percent, segments, fps, eta, spacing
        let barWidth = max(5, min(30, width - fixed - 12))
        var jobLines = [Self.row([("JOB", 6, true), ("STATE", 13, false), ("PROGRESS", barWidth + 2 + 5, false), ("SEGMENTS", 10, true),
                                  ("FPS", 7, true), ("ETA", 8, true), ("VIDEO", 0, false)])]
        for j in jobs {
            let rate = s.rates.jobs[String(j.id)]
            // A personalising job's bar is its fine-tune's share of the training budget.
            let progress = j.state == .personalising ? (j.personalisation?.progress ?? 0) : j.progress
            let bar = "[" + ProgressBar.bar(progress, width: barWidth) + "]" + String(format: "%4d%%", Int(progress * 100))
            jobLines.append(Self.row([("\(j.id)", 6, true), (j.state.rawValue, 13, false), (bar, barWidth + 2 + 5, false),
                                      ("\(j.segments.done)/\(j.segments.total)", 10, true),
                                      (rate.map { String(format: "%.1f", $0.framesPerSecond) } ?? "-", 7, true),
                                      (j.state.isTerminal ? "" : rate?.etaSeconds.map(ProgressBar.duration) ?? "--", 8, true),
                                      (j.video + (j.personalisation.map { "  personalise: \($0.summary)" } ?? ""), 0, false)]))
        }

        // Workers table.
        var workerLines = [Self.row([("WORKER", 14, false), ("HOST", 14, false), ("STATE", 9, false), ("SEGMENT", 9, false),
                                     ("FPS", 7, true), ("HEARTBEAT", 10, true), ("DONE", 0, false)])]
        for w in s.workers {
            let ago = max(0, now.timeIntervalSince(w.lastSeen))
            workerLines.append(Self.row([(w.name, 14, false), (w.host, 14, false), (w.state, 9, false), (w.current ?? "-", 9, false),
                                         (s.rates.workers[w.name].map { String(format: "%.1f", $0) } ?? "-", 7, true),
                                         (String(format: "%.1fs ago", ago), 10, true), ("\(w.segmentsDone) seg, \(w.framesDone) frames", 0, false)]))
        }

        // Fit into the height: title block, blank, jobs, blank, workers, footer last.
        var budget = height - top.count - 1 /* footer */ - 2 /* blanks */
        func take(_ lines: [String], _ allowed: Int) -> [String] {
            guard lines.count > allowed else { return lines }
            guard allowed >= 2 else { return Array(lines.prefix(max(0, allowed))) }
            return Array(lines.prefix(allowed - 1)) + ["  … \(lines.count - allowed + 1) more"]
        }
        let workerShare = min(workerLines.count, max(2, budget / 2))
        let jobShown = take(jobLines, max(1, budget - workerShare))
        budget -= jobShown.count
        let workerShown = take(workerLines, max(0, budget))
        var lines = top + [""] + jobShown + [""] + workerShown
        lines = Array(lines.prefix(height - 1))
        while lines.count < height - 1 { lines.append("") }
        lines.append(footer)
        return lines.map { Self.fit($0, width) }
    }

    /// Plain lines for a pipe (`top` when stdout is not a terminal): one summary line, then one
    /// line per job that is not finished.
    package func plainLines(_ s: FarmSnapshot) -> [String] {
        let fps = s.rates.framesPerSecond.map { String(format: "%.1f", $0) } ?? "-"
        var lines = ["\(Self.iso(s.at)) jobs " + JobState.allCases.map { "\($0.rawValue)=\(s.queue.jobs[$0.rawValue] ?? 0)" }.joined(separator: " ")
                     + " segments " + SegmentState.allCases.map { "\($0.rawValue)=\(s.queue.segments[$0.rawValue] ?? 0)" }.joined(separator: " ")
                     + " workers=\(s.workers.count) busy=\(s.workers.filter { $0.state == "busy" }.count) fps=\(fps)"]
        for j in s.jobs where (filter == nil ? !j.state.isTerminal : j.state == filter) {
            let r = s.rates.jobs[String(j.id)]
            lines.append("job \(j.id) \(j.state.rawValue) \(Int(j.progress * 100))% segments \(j.segments.done)/\(j.segments.total)"
                         + " frames \(j.framesDone)/\(j.frames.map(String.init) ?? "?")"
                         + " fps \(r.map { String(format: "%.1f", $0.framesPerSecond) } ?? "-")"
                         + " eta \(r?.etaSeconds.map(ProgressBar.duration) ?? "--")"
                         + (j.personalisation.map { p in
                             " personalise \(p.state) step \(p.step) loss \(p.loss.map { String(format: "%.4f", $0) } ?? "-")"
                                 + " elapsed \(Int(p.elapsedSeconds))/\(p.budgetSeconds)s" } ?? ""))
        }
        for w in s.workers {
            lines.append("worker \(w.name) \(w.host) \(w.state) segment \(w.current ?? "-") fps \(s.rates.workers[w.name].map { String(format: "%.1f", $0) } ?? "-")")
        }
        return lines
    }

    // MARK: Helpers

    /// Columns: (text, width, right-aligned); width 0 means "the rest".
    static func row(_ cells: [(String, Int, Bool)]) -> String {
        cells.map { text, w, right in
            guard w > 0 else { return text }
            let t = text.count > w ? String(text.prefix(w - 1)) + "…" : text
            let pad = String(repeating: " ", count: w - t.count)
            return right ? pad + t : t + pad
        }.joined(separator: " ")
    }

    /// Pads or cuts `line` to exactly `width` characters.
    static func fit(_ line: String, _ width: Int) -> String {
        if line.count > width { return String(line.prefix(width - 1)) + "…" }
        return line + String(repeating: " ", count: width - line.count)
    }

    static func clock(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "HH:mm:ss 'UTC'"
        return f.string(from: d)
    }

    static func iso(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: d)
    }
}

/// Text progress bars and durations, shared by `top` and `submit --wait`.
package enum ProgressBar {
    /// `width` cells of `█` (done) and `░` (to do).
    package static func bar(_ fraction: Double, width: Int) -> String {
        let f = fraction.isFinite ? max(0, min(1, fraction)) : 0
        let filled = Int((f * Double(width)).rounded(.down))
        return String(repeating: "█", count: filled) + String(repeating: "░", count: max(0, width - filled))
    }

    /// `m:ss` or `h:mm:ss`; `--` when not finite.
    package static func duration(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "--" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }

    /// The one-line progress text of `submit --wait`: state, segments, frames, speed and ETA.
    package static func jobLine(_ j: JobView, rate: JobRate?) -> String {
        let frames = j.frames.map { "frames \(j.framesDone)/\($0)" } ?? "frames ?"
        let fps = rate.map { String(format: "%.1f fps", $0.framesPerSecond) } ?? "-- fps"
        let eta = j.state.isTerminal ? "" : "  ETA " + (rate?.etaSeconds.map(duration) ?? "--")
        return "\(j.state)  segments \(j.segments.done)/\(j.segments.total)  \(frames)  \(fps)\(eta)"
    }
}
