import DubfarmCore
import Foundation
import Yams

/// The coordinator's effective configuration: defaults, then `coordinator.yml`, then `DUBFARM_…`
/// environment variables. Every key is listed in ``ConfigKey/all`` with its default and meaning.
package struct FarmConfiguration: Sendable, Hashable {
    /// Where workers connect (ZeroMQ bind address).
    package var workEndpoint = "tcp://*:5555"
    /// Where the CLI connects (ZeroMQ bind address).
    package var controlEndpoint = "tcp://*:5556"
    /// PostgreSQL connection URL. Prefer `DUBFARM_DATABASE_URL` or `database.url_file` for credentials.
    package var databaseURL = "postgresql://localhost/dubfarm"
    /// A file whose first line is the database URL (overrides `database.url`).
    package var databaseURLFile: String? = nil
    /// Commit segment claims and completions without waiting for the WAL flush (job changes stay
    /// durable). A crash of the PostgreSQL server may then forget the last fraction of a second of
    /// them: fencing rejects a forgotten lease's result and the segment is simply redone.
    package var asyncSegmentCommits = true
    /// Seconds a database call waits for a lost PostgreSQL connection to come back
    /// (reconnecting with backoff) before it fails.
    package var databaseReconnectSeconds = 120.0
    /// The coordinator's media store: uploads, segment results, outputs.
    package var mediaStore = "./dubfarm-store"
    /// Nominal segment length in seconds.
    package var segmentSeconds = 10.0
    /// Frames decoded on each side of a segment for tracking and smoothing across seams.
    package var contextFrames = 4
    /// Inputs whose keyframes lie further apart than this (seconds) are re-cut once before planning.
    package var maxKeyframeInterval = 10.0
    /// Seconds of dub audio sent on each side of a segment for lip sync.
    package var audioMarginSeconds = 0.25
    /// Seconds between heartbeats, both ways.
    package var heartbeatInterval = 1.0
    /// Missed heartbeats after which a peer is presumed dead.
    package var liveness = 5
    /// Seconds a lease lives in the database without renewal (covers coordinator restarts).
    package var leaseSeconds = 30.0
    package var retry = RetryPolicy(maxAttempts: 3, backoffBase: 2, backoffMax: 60)
    /// The output's video encoder settings, identical for every segment of a job.
    package var encoder = EncoderSettings(codec: "libx264", crf: 18, preset: "veryfast", pixelFormat: "yuv420p")
    /// The stitched output's AAC bit rate.
    package var audioBitrate = 192_000
    /// Stage used when a job names none.
    package var defaultStage = "dub"
    /// Largest ZeroMQ message accepted on either endpoint (refused before allocation).
    package var maxMessageBytes: Int64 = 512 << 20
    /// Largest single upload accepted.
    package var maxUploadBytes: Int64 = 8 << 30
    /// Hours after which the coordinator removes a finished job's files and uploads no
    /// unfinished job needs (what `dubfarm gc --older-than` does by hand); 0: never.
    package var retentionHours = 0.0
    /// trace, debug, info, notice, warning, error, critical.
    package var logLevel = "info"
    /// `HOST:PORT` of the coordinator's HTTP server for Prometheus metrics and the dashboard
    /// (empty: off).
    package var metricsListen = "127.0.0.1:9464"
    /// Per-job personalisation (`submit --personalise`): the budget in seconds every job gets
    /// when it names none (0: only jobs that ask are personalised).
    package var personaliseDefaultSeconds = 0
    /// Frames of a job's video (from its start) in its personalisation dataset.
    package var personaliseMaxFrames = 750
    /// Seconds of training between the checkpoints a personalising worker sends back (what a
    /// worker killed mid-way costs at most).
    package var personaliseCheckpointSeconds = 60
    /// Failed attempts after which a personalisation gives up (then the job falls back or fails).
    package var personaliseMaxAttempts = 3
    /// The model configuration (crop size) of the personalisation dataset: the workers' model's.
    package var personaliseModelConfig = "small"
    /// CURVE: the coordinator's secret key file (`dubfarm keys generate`); `nil` = plaintext, no authentication.
    package var secretKeyFile: String? = nil
    /// The dashboard's users (`name:bcrypt-hash` lines); nil: nobody can act from the dashboard.
    package var dashboardUsersFile: String? = nil
    /// CURVE: a public key file, or a directory of them, naming the workers admitted on the work endpoint.
    package var authorizedWorkers: String? = nil
    /// CURVE: a public key file, or a directory of them, naming the CLI clients admitted on the control endpoint.
    package var authorizedClients: String? = nil

    package init() {}

    /// Heartbeat interval × liveness: how long silence lasts before a peer is presumed dead.
    package var livenessTimeout: Double { heartbeatInterval * Double(liveness) }

    /// The database URL with any password replaced by `***`, for logs and `config check`.
    package var redactedDatabaseURL: String { redactURL(databaseURL) }
}

/// Replaces the password in `scheme://user:password@host/...` with `***`.
package func redactURL(_ url: String) -> String {
    // The user info ends at the last '@' before the query: a password may itself hold '@' or '/'.
    let queryStart = url.firstIndex(of: "?") ?? url.endIndex
    guard let scheme = url.range(of: "://"), scheme.upperBound <= queryStart,
          let at = url.range(of: "@", options: .backwards, range: scheme.upperBound..<queryStart) else {
        return url.replacingOccurrences(of: #"password=[^&\s]*"#, with: "password=***", options: .regularExpression)
    }
    let userinfo = url[scheme.upperBound..<at.lowerBound]
    var out = url
    if let colon = userinfo.firstIndex(of: ":") {
        out.replaceSubrange(colon..<at.lowerBound, with: ":***")
    }
    return out.replacingOccurrences(of: #"password=[^&\s]*"#, with: "password=***", options: .regularExpression)
}

/// Where an effective value came from.
package enum ConfigSource: String, Sendable {
    case `default`, file, environment
}

/// One configuration key: its YAML path, environment variable, default, and meaning.
package struct ConfigKey: Sendable {
    /// `section.key` as in `coordinator.yml`.
    package let path: String
    package let help: String
    package let secret: Bool
    let read: @Sendable (FarmConfiguration) -> String
    let write: @Sendable (inout FarmConfiguration, String) throws -> Void

    /// `DUBFARM_SECTION_KEY`.
    package var environmentVariable: String {
        "DUBFARM_" + path.uppercased().replacingOccurrences(of: ".", with: "_")
    }
    /// The built-in default, as text.
    package var defaultValue: String { read(FarmConfiguration()) }
    package func value(in c: FarmConfiguration) -> String { read(c) }
}

func invalid(_ path: String, _ value: String, _ expected: String) -> DubfarmError {
    DubfarmError(.configuration, "\(path): '\(value)' is not \(expected)")
}

func key(_ path: String, _ help: String, secret: Bool = false, _ kp: WritableKeyPath<FarmConfiguration, String> & Sendable) -> ConfigKey {
    ConfigKey(path: path, help: help, secret: secret, read: { $0[keyPath: kp] }, write: { c, v in c[keyPath: kp] = v })
}
func key(_ path: String, _ help: String, _ kp: WritableKeyPath<FarmConfiguration, String?> & Sendable) -> ConfigKey {
    ConfigKey(path: path, help: help, secret: false, read: { $0[keyPath: kp] ?? "" },
              write: { c, v in c[keyPath: kp] = v.isEmpty ? nil : v })
}
func key(_ path: String, _ help: String, _ kp: WritableKeyPath<FarmConfiguration, Int> & Sendable, _ range: ClosedRange<Int>) -> ConfigKey {
    ConfigKey(path: path, help: help, secret: false, read: { String($0[keyPath: kp]) }, write: { c, v in
        guard let i = Int(v), range.contains(i) else { throw invalid(path, v, "an integer in \(range.lowerBound)...\(range.upperBound)") }
        c[keyPath: kp] = i
    })
}
func key(_ path: String, _ help: String, _ kp: WritableKeyPath<FarmConfiguration, Int64> & Sendable, _ range: ClosedRange<Int64>) -> ConfigKey {
    ConfigKey(path: path, help: help, secret: false, read: { String($0[keyPath: kp]) }, write: { c, v in
        guard let i = Int64(v), range.contains(i) else { throw invalid(path, v, "an integer in \(range.lowerBound)...\(range.upperBound)") }
        c[keyPath: kp] = i
    })
}
func key(_ path: String, _ help: String, _ kp: WritableKeyPath<FarmConfiguration, Double> & Sendable, _ range: ClosedRange<Double>) -> ConfigKey {
    ConfigKey(path: path, help: help, secret: false, read: { formatNumber($0[keyPath: kp]) }, write: { c, v in
        guard let d = Double(v), range.contains(d) else { throw invalid(path, v, "a number in \(formatNumber(range.lowerBound))...\(formatNumber(range.upperBound))") }
        c[keyPath: kp] = d
    })
}

func formatNumber(_ d: Double) -> String {
    d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
}

extension ConfigKey {
    /// Every key, in `coordinator.yml` order.
    package static let all: [ConfigKey] = [
        key("coordinator.work_endpoint", "ZeroMQ address workers connect to (bind form, e.g. tcp://*:5555)", \.workEndpoint),
        key("coordinator.control_endpoint", "ZeroMQ address the CLI connects to", \.controlEndpoint),
        key("coordinator.default_stage", "stage for jobs that name none: passthrough or dub", \.defaultStage),
        key("database.url", "PostgreSQL URL; put credentials in DUBFARM_DATABASE_URL or url_file, not here", secret: true, \.databaseURL),
        key("database.url_file", "file whose first line is the database URL (overrides url)", \.databaseURLFile),
        ConfigKey(path: "database.async_segment_commits", help: "commit segment claims and completions without waiting for the WAL flush",
                  secret: false, read: { $0.asyncSegmentCommits ? "true" : "false" }, write: { c, v in
                      switch v.lowercased() {
                      case "true", "yes", "on", "1": c.asyncSegmentCommits = true
                      case "false", "no", "off", "0": c.asyncSegmentCommits = false
                      default: throw invalid("database.async_segment_commits", v, "true or false")
                      }
                  }),
        key("database.reconnect_seconds", "seconds a database call waits for a lost connection to come back", \.databaseReconnectSeconds, 0...86400),
        key("media.store", "directory for uploads, segments and outputs (the coordinator's disk)", \.mediaStore),
        key("media.max_upload_bytes", "largest file a client may upload", \.maxUploadBytes, 1...(1 << 50)),
        key("media.retention_hours", "hours after which finished jobs' files and unused uploads are removed (0: keep them)", \.retentionHours, 0...1_000_000),
        key("segments.seconds", "nominal segment length in seconds", \.segmentSeconds, 0.01...3600),
        key("segments.context_frames", "frames decoded on each side of a segment (tracking across seams)", \.contextFrames, 0...120),
        key("segments.max_keyframe_interval", "inputs with keyframes further apart (seconds) are re-cut once", \.maxKeyframeInterval, 0.5...3600),
        key("segments.audio_margin", "seconds of dub audio sent beyond each side of a segment", \.audioMarginSeconds, 0...10),
        key("workers.heartbeat_interval", "seconds between heartbeats", \.heartbeatInterval, 0.05...60),
        key("workers.liveness", "missed heartbeats before a worker (or coordinator) is presumed dead", \.liveness, 1...100),
        key("workers.lease_seconds", "lease lifetime in the database without renewal", \.leaseSeconds, 1...86400),
        ConfigKey(path: "retry.max_attempts", help: "failed attempts before a segment is dead", secret: false,
                  read: { String($0.retry.maxAttempts) }, write: { c, v in
                      guard let i = Int(v), (1...100).contains(i) else { throw invalid("retry.max_attempts", v, "an integer in 1...100") }
                      c.retry.maxAttempts = i
                  }),
        ConfigKey(path: "retry.backoff_base", help: "seconds to wait after the first failure; doubles each time", secret: false,
                  read: { formatNumber($0.retry.backoffBase) }, write: { c, v in
                      guard let d = Double(v), (0...3600).contains(d) else { throw invalid("retry.backoff_base", v, "a number in 0...3600") }
                      c.retry.backoffBase = d
                  }),
        ConfigKey(path: "retry.backoff_max", help: "longest wait between attempts, seconds", secret: false,
                  read: { formatNumber($0.retry.backoffMax) }, write: { c, v in
                      guard let d = Double(v), (0...86400).contains(d) else { throw invalid("retry.backoff_max", v, "a number in 0...86400") }
                      c.retry.backoffMax = d
                  }),
        ConfigKey(path: "output.codec", help: "video encoder (FFmpeg name)", secret: false,
                  read: { $0.encoder.codec }, write: { c, v in
                      guard v == "libx264" else { throw invalid("output.codec", v, "a supported encoder (libx264)") }
                      c.encoder.codec = v
                  }),
        ConfigKey(path: "output.crf", help: "x264 constant rate factor (lower is better, 18 is visually lossless)", secret: false,
                  read: { String($0.encoder.crf) }, write: { c, v in
                      guard let i = Int(v), (0...51).contains(i) else { throw invalid("output.crf", v, "an integer in 0...51") }
                      c.encoder.crf = i
                  }),
        ConfigKey(path: "output.preset", help: "x264 preset (ultrafast … veryslow)", secret: false,
                  read: { $0.encoder.preset }, write: { c, v in
                      let presets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"]
                      guard presets.contains(v) else { throw invalid("output.preset", v, "one of \(presets.joined(separator: ", "))") }
                      c.encoder.preset = v
                  }),
        ConfigKey(path: "output.pixel_format", help: "output pixel format", secret: false,
                  read: { $0.encoder.pixelFormat }, write: { c, v in
                      guard ["yuv420p", "yuv422p", "yuv444p"].contains(v) else { throw invalid("output.pixel_format", v, "yuv420p, yuv422p or yuv444p") }
                      c.encoder.pixelFormat = v
                  }),
        key("output.audio_bitrate", "AAC bit rate of the muxed dub track, bits/s", \.audioBitrate, 32_000...512_000),
        key("limits.max_message_bytes", "largest ZeroMQ message accepted (refused before allocation)", \.maxMessageBytes, (1 << 16)...(1 << 34)),
        key("logging.level", "trace, debug, info, notice, warning, error or critical", \.logLevel),
        ConfigKey(path: "metrics.listen", help: "HOST:PORT for Prometheus metrics (/metrics) and the dashboard (/); empty turns it off",
                  secret: false, read: { $0.metricsListen }, write: { c, v in
                      do { _ = try FarmConfiguration.parseListen(v) } catch { throw invalid("metrics.listen", v, "HOST:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464) or empty") }
                      c.metricsListen = v
                  }),
        key("personalise.default_seconds", "training budget of every job that does not say (submit --personalise[=SECONDS]); 0 = off", \.personaliseDefaultSeconds, 0...86_400),
        key("personalise.max_frames", "frames of a job's video (from its start) the personalisation trains and measures on", \.personaliseMaxFrames, 20...100_000),
        key("personalise.checkpoint_seconds", "seconds of training between checkpoints sent back (the most a killed worker costs)", \.personaliseCheckpointSeconds, 1...3_600),
        key("personalise.max_attempts", "failed attempts before a personalisation gives up", \.personaliseMaxAttempts, 1...100),
        ConfigKey(path: "personalise.model_config", help: "crop configuration of the dataset: the workers' model's (tiny, small, paper)", secret: false,
                  read: { $0.personaliseModelConfig }, write: { c, v in
                      guard ["tiny", "small", "paper"].contains(v) else { throw invalid("personalise.model_config", v, "tiny, small or paper") }
                      c.personaliseModelConfig = v
                  }),
        key("dashboard.users_file", "who may cancel, retry and re-prioritise jobs from the dashboard: NAME:BCRYPT-HASH lines (dubfarm config hash-password); empty = nobody", \.dashboardUsersFile),
        key("security.secret_key_file", "the coordinator's CURVE secret key file (dubfarm keys generate); empty = CURVE off, plaintext", \.secretKeyFile),
        key("security.authorized_workers", "public key file or directory of the workers admitted (CURVE on)", \.authorizedWorkers),
        key("security.authorized_clients", "public key file or directory of the CLI clients admitted (CURVE on)", \.authorizedClients),
    ]

    static let byPath: [String: ConfigKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.path, $0) })
}

/// Loads the configuration and remembers where each value came from.
package struct ConfigurationLoader: Sendable {
    package private(set) var configuration = FarmConfiguration()
    package private(set) var sources: [String: ConfigSource] = [:]
    /// The file read, if any.
    package private(set) var file: String?

    package init() {}

    /// Defaults ← `file` (when given or found) ← environment.
    package static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ConfigurationLoader {
        var l = ConfigurationLoader()
        if let file {
            guard FileManager.default.fileExists(atPath: file) else {
                throw DubfarmError(.configuration, "configuration file \(file) does not exist")
            }
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw DubfarmError(.configuration, "cannot read configuration file \(file): \(error.localizedDescription)")
            }
            try l.apply(yaml: text, name: file)
            l.file = file
        }
        try l.apply(environment: environment)
        try l.finish()
        return l
    }

    /// Applies a YAML document of `section: {key: value}` maps; unknown keys are errors.
    package mutating func apply(yaml: String, name: String = "configuration") throws {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw DubfarmError(.configuration, "\(name) is not valid YAML: \(error)")
        }
        guard let root else { return }
        guard let sections = root as? [String: Any] else {
            throw DubfarmError(.configuration, "\(name): the top level must be a map of sections")
        }
        for (section, body) in sections.sorted(by: { $0.key < $1.key }) {
            guard let body = body as? [String: Any] else {
                if body is NSNull { continue }
                throw DubfarmError(.configuration, "\(name): section '\(section)' must be a map of keys")
            }
            for (k, v) in body.sorted(by: { $0.key < $1.key }) {
                let path = "\(section).\(k)"
                guard let ck = ConfigKey.byPath[path] else {
                    throw DubfarmError(.configuration, "\(name): unknown key '\(path)'\(suggestion(for: path))")
                }
                let text: String
                switch v {
                case is NSNull: text = ""
                case let s as String: text = s
                case let b as Bool: text = b ? "true" : "false"
                case let i as Int: text = String(i)
                case let d as Double: text = formatNumber(d)
                default: throw DubfarmError(.configuration, "\(name): '\(path)' must be a single value")
                }
                try ck.write(&configuration, text)
                sources[path] = .file
            }
        }
    }

    /// Applies every `DUBFARM_SECTION_KEY` variable that names a key.
    package mutating func apply(environment: [String: String]) throws {
        for ck in ConfigKey.all {
            if let v = environment[ck.environmentVariable] {
                do { try ck.write(&configuration, v) } catch let e as DubfarmError {
                    throw DubfarmError(.configuration, "\(ck.environmentVariable): \(e.message)")
                }
                sources[ck.path] = .environment
            }
        }
    }

    mutating func finish() throws {
        if let f = configuration.databaseURLFile {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8),
                  let line = text.split(whereSeparator: \.isNewline).first.map(String.init)?.trimmingCharacters(in: .whitespaces),
                  !line.isEmpty else {
                throw DubfarmError(.configuration, "database.url_file: cannot read a URL from \(f)")
            }
            configuration.databaseURL = line
            sources["database.url"] = .file
        }
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(configuration.logLevel) else {
            throw invalid("logging.level", configuration.logLevel, "one of \(levels.joined(separator: ", "))")
        }
        guard configuration.retry.backoffMax >= configuration.retry.backoffBase else {
            throw DubfarmError(.configuration, "retry.backoff_max (\(configuration.retry.backoffMax)) is below retry.backoff_base (\(configuration.retry.backoffBase))")
        }
        for (path, ep) in [("coordinator.work_endpoint", configuration.workEndpoint), ("coordinator.control_endpoint", configuration.controlEndpoint)] {
            guard ep.hasPrefix("tcp://") || ep.hasPrefix("ipc://") || ep.hasPrefix("inproc://") else {
                throw invalid(path, ep, "a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)")
            }
        }
        guard configuration.workEndpoint != configuration.controlEndpoint else {
            throw DubfarmError(.configuration, "coordinator.work_endpoint and coordinator.control_endpoint must differ")
        }
        if configuration.secretKeyFile != nil {
            for (path, v) in [("security.authorized_workers", configuration.authorizedWorkers), ("security.authorized_clients", configuration.authorizedClients)] where v == nil {
                throw DubfarmError(.configuration, "\(path) must name a public key file or directory when security.secret_key_file is set (CURVE on): without it nobody could connect")
            }
        }
        guard configuration.leaseSeconds > configuration.livenessTimeout else {
            throw DubfarmError(.configuration, "workers.lease_seconds (\(formatNumber(configuration.leaseSeconds))) must exceed heartbeat_interval × liveness (\(formatNumber(configuration.livenessTimeout)))")
        }
    }

    /// The effective configuration as commented YAML, secrets redacted, each value's source noted.
    package func render() -> String {
        var out = "# effective dubfarm configuration" + (file.map { " (file: \($0))" } ?? " (no file)") + "\n"
        var section = ""
        for ck in ConfigKey.all {
            let parts = ck.path.split(separator: ".", maxSplits: 1).map(String.init)
            if parts[0] != section {
                section = parts[0]
                out += "\(section):\n"
            }
            var v = ck.value(in: configuration)
            if ck.path == "database.url" { v = redactURL(v) }
            let src = sources[ck.path] ?? .default
            let line = "  \(parts[1]): \(yamlScalar(v))"
            out += line.count < 52 ? line.padding(toLength: 52, withPad: " ", startingAt: 0) : line + " "
            out += " # \(src.rawValue)\(src == .environment ? " (\(ck.environmentVariable))" : "")\n"
        }
        return out
    }
}

func yamlScalar(_ s: String) -> String {
    if s.isEmpty { return "\"\"" }
    if s.contains(where: { ":#{}[],&*!|>'\"%@`".contains($0) }) || s.first == " " { return "\"\(s)\"" }
    return s
}

func suggestion(for path: String) -> String {
    let best = ConfigKey.all.map(\.path).min { levenshtein($0, path) < levenshtein($1, path) }
    guard let best, levenshtein(best, path) <= 4 else { return "" }
    return " (did you mean '\(best)'?)"
}

func levenshtein(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}

extension FarmConfiguration {
    /// Splits `HOST:PORT` (`[::1]:9464` for IPv6; `:9464` means every interface); nil for "" (off).
    package static func parseListen(_ s: String) throws -> (host: String, port: Int)? {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { return nil }
        guard let colon = t.lastIndex(of: ":"), let port = Int(t[t.index(after: colon)...]), (0...65535).contains(port) else {
            throw DubfarmError(.configuration, "metrics.listen: '\(s)' is not HOST:PORT")
        }
        var host = String(t[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}
