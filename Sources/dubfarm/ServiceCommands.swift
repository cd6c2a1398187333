import ArgumentParser
import Coordinator
import Dubbing
import FaceAnalysis
import DubfarmCore
import FarmConfig
import FarmSecurity
import FarmStore
import Foundation
import Monitoring
import Logging
import ServiceLifecycle
import LocalFarm
import TrainingData
import VQModel
import Worker

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator: work endpoint for workers, control endpoint for the CLI.",
        discussion: """
            All state lives in PostgreSQL (run `dubfarm migrate` once first); media lives in the store \
            directory. Kill it at any moment: a new one resumes from the database and the store. \
            SIGTERM stops handing out work, waits briefly for segments in flight, and exits.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Write the bound endpoints as JSON to this file once ready (for scripts and tests).")
    var readyFile: String?

    func run() async throws {
        let loaded = try options.load()
        let logger = bootstrapLogging(level: loaded.configuration.logLevel)
        let service = CoordinatorService(config: loaded.configuration, logger: logger, datasetBuilder: personalisationDatasetBuilder(logger: logger))
        let readyFile = self.readyFile
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)]
        // Prometheus metrics and the dashboard (metrics.listen), next to the coordinator.
        if let monitoring = try service.monitoringServer() {
            services.append(.init(service: monitoring, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let announce = Task {
            guard let readyFile else { return }
            while !Task.isCancelled {
                let (w, c) = service.boundEndpoints
                if !w.isEmpty && !c.isEmpty {
                    let text = "{\"work\":\"\(w)\",\"control\":\"\(c)\",\"pid\":\(getpid())}\n"
                    try? text.write(toFile: readyFile, atomically: true, encoding: .utf8)
                    return
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        defer { announce.cancel() }
        try await group.run()
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker that processes segments for a coordinator.",
        discussion: """
            Needs no database and no shared filesystem: everything arrives in the task. Start as many \
            as you like, on any machine that reaches the coordinator's work endpoint. SIGTERM lets the \
            current segment finish within --grace seconds; past that the worker returns the frames it \
            has finished and the coordinator plans the rest of the segment for another worker, so no \
            finished frame is lost.
            """)

    @Option(name: .long, help: "The coordinator's work endpoint, e.g. tcp://render-01:5555.")
    var connect: String

    @Option(name: .long, help: "Unique worker name (default: HOST-PID).")
    var name: String?

    @Option(name: .long, help: "Threads for decoding, the stage and encoding.")
    var threads: Int = 1

    @Option(name: .long, help: "Processing stage: dub (face swap and lip sync), passthrough (decode and re-encode unchanged), sleep, sleep-copy (sleep, then return the input packets: all-intra inputs, for benchmarks), fail.")
    var stage: String = "dub"

    @Option(name: .long, help: "Dub stage: weights directory (manifest.json + model.safetensors), or untrained:tiny|small|paper for seeded UNTRAINED weights. Default: $DUBFARM_MODEL, else the bundled trained models/dubfarm-small.")
    var model: String?

    @Option(name: .long, help: "Seconds per segment for the sleep and sleep-copy stages.")
    var sleepSeconds: Double = 1

    @Option(name: .long, help: "Seconds a stopping worker (SIGTERM) keeps working on its segment; then it returns the frames finished and hands the rest back. Give the process this plus about 15 s before it is killed (Kubernetes terminationGracePeriodSeconds, systemd TimeoutStopSec).")
    var grace: Double = 30

    @Option(name: .long, help: "Seconds between heartbeats (match the coordinator's workers.heartbeat_interval).")
    var heartbeat: Double = 1

    @Option(name: .long, help: "Missed heartbeats before the coordinator is presumed gone.")
    var liveness: Int = 5

    @Option(name: .long, help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    @Flag(name: .long, help: "Also fine-tune jobs' models (submit --personalise) on this worker: it needs the trainer (training/ and its Python environment, `make py-deps`). The fine-tune starts from --model.")
    var personalise = false

    @Option(name: .long, help: "--personalise: the trainer's Python (default: $DUBFARM_PYTHON, else .venv/bin/python of the repository beside this executable, else python3 on PATH).")
    var python: String?

    @Option(name: .long, help: "--personalise: the trainer's directory, training/ (default: $DUBFARM_TRAINER_DIR, else the repository's beside this executable).")
    var trainerDir: String?

    @Option(name: .long, help: "--personalise: the trainer's device: auto (a CUDA GPU when the trainer's torch sees one, else the CPU), cpu or cuda. A GPU worker takes fine-tunes before CPU workers.")
    var personaliseDevice: String = "auto"

    @Option(name: .long, help: ArgumentHelp("--personalise: where this worker hosts a data-parallel fine-tune (submit --personalise-workers) as its first rank, HOST or HOST:PORT; the other workers' trainers connect there (default: this machine's address towards the coordinator and a free port).", valueName: "host[:port]"))
    var rendezvous: String?

    @Option(name: .long, help: "Where jobs' personalised weights are cached by hash (default: $DUBFARM_CACHE_DIR/weights, else ~/.cache/dubfarm/weights).")
    var cacheDir: String?

    @Flag(name: .long, help: .hidden)
    var testFailEverySegment = false

    @OptionGroup var curve: CurveOptions

    func validate() throws {
        guard threads >= 1 && threads <= 256 else { throw ValidationError("--threads must be between 1 and 256") }
        guard connect.contains("://") else { throw ValidationError("--connect needs a ZeroMQ endpoint such as tcp://HOST:5555") }
    }

    func run() async throws {
        let logger = bootstrapLogging(level: logLevel)
        var stageImpl: any Stage
        switch stage {
        case "passthrough": stageImpl = PassthroughStage()
        case "sleep": stageImpl = SleepStage(seconds: sleepSeconds)
        case "sleep-copy": stageImpl = SleepCopyStage(seconds: sleepSeconds)
        case "fail": stageImpl = FailingStage()
        case "dub": stageImpl = try DubStage(engine: makeDubEngine(model: model, logger: logger))
        default: throw ValidationError("unknown stage '\(stage)' (\(StageCatalog.namesInWords))")
        }
        // Fault tests only: a broken worker that still advertises --stage (and so gets its segments).
        if testFailEverySegment { stageImpl = FailingStage(advertising: stage) }
        var opts = WorkerOptions(endpoint: connect.replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:"),
                                 name: name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())", threads: threads)
        opts.heartbeatInterval = heartbeat
        opts.liveness = liveness
        opts.graceSeconds = grace
        opts.curve = try curve.resolve()
        if let cacheDir { opts.weightsCache = WeightsCache(root: URL(fileURLWithPath: cacheDir)) }
        if personalise {
            guard let dub = stageImpl as? DubStage, let base = dub.engine.model.directory else {
                throw ValidationError("--personalise needs the dub stage with a weights directory as --model (the fine-tune starts from it)")
            }
            let env = ProcessInfo.processInfo.environment
            let trainer = trainerDir.map { URL(fileURLWithPath: $0) } ?? env["DUBFARM_TRAINER_DIR"].map { URL(fileURLWithPath: $0) }
                ?? TrainerLocation.trainingDirectory(executable: ProcessControl.currentExecutable)
            let py = python ?? env["DUBFARM_PYTHON"] ?? TrainerLocation.python(trainingDirectory: trainer)
            var p = Personaliser(python: py, trainerDirectory: trainer, baseModel: base,
                                 workDirectory: FileManager.default.temporaryDirectory, threads: threads, device: personaliseDevice)
            try p.check()
            p.device = try p.resolveDevice()
            p.rendezvous = try Rendezvous.endpoint(rendezvous, coordinator: opts.endpoint)
            opts.personaliser = p
            logger.info("personalisation on", metadata: ["python": .string(py), "trainer": .string(trainer.path), "base": .string(base.path),
                                                         "device": .string(p.device), "rendezvous": .string(p.rendezvous ?? "none")])
        }
        let node = WorkerNode(options: opts, stage: stageImpl, logger: logger)
        // Signals arrive on a dispatch source; the node stops itself in an orderly way.
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { node.stop() }
            s.resume()
            return s
        }
        defer { sources.forEach { $0.cancel() } }
        try await runBlocking("worker socket") { try node.run() }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending database migrations (each exactly once, in a transaction).")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let c = try options.load().configuration
        let logger = bootstrapLogging(level: "warning")
        let store = FarmStore(url: c.databaseURL, actor: "dubfarm migrate", logger: logger)
        try await store.connect(retryFor: 10)
        let applied = try await store.migrate()
        let version = try await store.schemaVersion()
        await store.close()
        if applied.isEmpty {
            print("database is up to date (schema version \(version))")
        } else {
            for m in applied { print("applied \(m.version) \(m.name)") }
            print("schema version \(version)")
        }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Inspect the coordinator's configuration; make dashboard users.", subcommands: [Check.self, HashPassword.self])

    struct HashPassword: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash-password",
            abstract: "Print a dashboard user's line for dashboard.users_file: NAME:BCRYPT-HASH.",
            discussion: """
                Asks for the password (or reads its first line from standard input when that is not \
                a terminal), hashes it with bcrypt and prints the line to add to the file named by \
                dashboard.users_file. Users who log in at the dashboard may cancel, retry and \
                re-prioritise jobs.

                Example: dubfarm config hash-password --user ops >> /etc/dubfarm/dashboard-users
                """)
        @Option(name: .long, help: "The user's name.") var user: String = "admin"

        func validate() throws {
            guard !user.isEmpty, !user.contains(":"), !user.contains(where: \.isNewline) else {
                throw ValidationError("--user: a name without ':' or line breaks")
            }
        }

        func run() throws {
            let password: String
            if isatty(STDIN_FILENO) != 0 {
                guard let first = getpass("password for \(user): ").map({ String(cString: $0) }),
                      let again = getpass("again: ").map({ String(cString: $0) }) else { throw ValidationError("no password given") }
                guard first == again else { throw ValidationError("the two passwords differ") }
                password = first
            } else {
                password = readLine(strippingNewline: true) ?? ""
            }
            guard password.count >= 8 else { throw ValidationError("a dashboard password needs at least 8 characters") }
            print("\(user):\(DashboardAuth.hash(password))")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the configuration and print the effective values (secrets redacted).")
        @OptionGroup var options: ConfigOptions
        @Flag(name: .long, help: "Print JSON: {file, settings: [{key, value, source, environment}]}.") var json = false
        func run() throws {
            let loaded = try options.load()
            // CURVE key files are checked here too, so a bad one is found before the coordinator starts.
            if let file = loaded.configuration.secretKeyFile {
                do { _ = try KeyFiles.loadKeyPair(file, what: "coordinator's secret key file") } catch let e as DubfarmError {
                    throw DubfarmError(.configuration, "security.secret_key_file: \(e.message)")
                }
                for (key, path) in [("security.authorized_workers", loaded.configuration.authorizedWorkers),
                                    ("security.authorized_clients", loaded.configuration.authorizedClients)] {
                    guard let path else { continue }
                    do { _ = try KeyFiles.loadAuthorizedKeys(path) } catch let e as DubfarmError {
                        throw DubfarmError(.configuration, "\(key): \(e.message)")
                    }
                }
            }
            if json {
                struct Report: Encodable { var file: String?; var settings: [EffectiveSetting] }
                return try printJSON(Report(file: loaded.file, settings: loaded.effectiveSettings))
            }
            print(loaded.render(), terminator: "")
        }
    }
}

/// Resolves `--model` (else `$DUBFARM_MODEL`, else the bundled trained default beside this
/// executable) to a ``DubModelSpec``; throws saying where it looked when nothing is found.
func resolveDubModel(_ flag: String?) throws -> (spec: DubModelSpec, from: String) {
    try DubModelSpec.resolve(flag: flag, environment: ProcessInfo.processInfo.environment,
                             executable: ProcessControl.currentExecutable)
}

/// The dub stage's engine: the model (see ``resolveDubModel(_:)``; seeded untrained weights only
/// on request, said once and loudly) and the face models.
func makeDubEngine(model flag: String?, logger: Logger) throws -> DubEngine {
    let t0 = Date()
    let (spec, from) = try resolveDubModel(flag)
    let model = try DubModel.load(spec)
    if model.directory != nil {
        let hash = model.id.split(separator: "@").last.map(String.init) ?? ""
        logger.info("model loaded: \(model.id) (\(model.trained ? "trained" : "UNTRAINED") weights from \(spec))", metadata: [
            "model": .string(model.id), "hash": .string(hash), "directory": .string(spec.description), "from": .string(from),
            "trained": .stringConvertible(model.trained),
            "trained_modules": .string(model.trainedModules.map { $0.sorted().joined(separator: ",") } ?? "(not recorded)"),
        ])
        if !model.trained {
            logger.warning("model \(model.id) is marked untrained in its metadata: faces will be replaced by noise-like output")
        }
        if !model.swapsFaces {
            logger.warning("""
                model \(model.id) has no trained face swap: a job's source face (submit --face) is not applied; \
                such jobs get lip sync only
                """, metadata: ["model": .string(model.id)])
        }
    } else {
        logger.warning("""
            model weights are UNTRAINED (\(spec), seed \(DubModel.defaultSeed)), as asked by \(from): \
            faces will be replaced by noise-like output; drop the flag for the bundled trained model
            """, metadata: ["model": .string(model.id), "trained": "false"])
    }
    let analyzer = try FaceAnalyzer.load { logger.warning("\($0)") }
    logger.info("dub stage ready", metadata: [
        "model": .string(model.id), "crop": .stringConvertible(model.model.config.imageSize),
        "landmarks": .string(analyzer.predictor == nil ? "absent (box crops)" : "dlib 68"),
        "seconds": .string(String(format: "%.1f", Date().timeIntervalSince(t0))),
    ])
    return DubEngine(model: model, analyzer: analyzer, logger: logger)
}

/// Where a worker finds the trainer (`worker --personalise`) when not told.
enum TrainerLocation {
    /// `training/` in the repository holding this executable (`.build/release/dubfarm` and its
    /// resolved `.build/<triple>/release/dubfarm` both reach it), else an install's.
    static func trainingDirectory(executable: String) -> URL {
        var dir = URL(fileURLWithPath: executable).standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = dir.appendingPathComponent("training")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("dubtrain").path) { return candidate }
            if dir.path == "/" { break }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: "/usr/share/dubfarm/training")
    }

    /// The repository's `.venv/bin/python` beside `training/`, else `python3` on PATH.
    static func python(trainingDirectory: URL) -> String {
        let venv = trainingDirectory.deletingLastPathComponent().appendingPathComponent(".venv/bin/python").path
        if FileManager.default.isExecutableFile(atPath: venv) { return venv }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let p = "\(dir)/python3"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "python3"
    }
}

/// The coordinator's builder of personalisation datasets: `dubfarm dataset build` in-process.
func personalisationDatasetBuilder(logger: Logger) -> PersonalisationDatasetBuilder {
    { video, directory, maxFrames, config in
        let modelConfig: ModelConfig
        do { modelConfig = try ModelConfig.named(config) } catch {
            throw DubfarmError(.configuration, "personalise.model_config: \(error)")
        }
        var options = DatasetOptions(config: modelConfig)
        options.maxFramesPerClip = maxFrames
        let analyzer = try FaceAnalyzer.load { logger.warning("\($0)") }
        let index = try DatasetBuilder(analyzer: analyzer, options: options).build(inputs: [video.path], into: directory) { line in
            logger.debug("dataset: \(line)")
        }
        return index.shards.reduce(0) { $0 + $1.count }
    }
}
