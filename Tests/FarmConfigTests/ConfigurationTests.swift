import DubfarmCore
import Foundation
import Testing
@testable import FarmConfig

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

@Suite("Configuration")
struct ConfigurationTests {
    @Test("coordinator.yml documents every key with its default")
    func shippedFileMatchesDefaults() throws {
        let path = repoRoot.appendingPathComponent("coordinator.yml").path
        let loaded = try ConfigurationLoader.load(file: path, environment: [:])
        #expect(loaded.configuration == FarmConfiguration())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for key in ConfigKey.all {
            let name = String(key.path.split(separator: ".")[1])
            #expect(text.contains("\n  \(name):"), "coordinator.yml lacks \(key.path)")
            #expect(loaded.sources[key.path] == .file, "\(key.path) not set by the file")
        }
    }

    @Test("environment overrides the file")
    func environment() throws {
        let env = ["DUBFARM_WORKERS_LIVENESS": "7", "DUBFARM_DATABASE_URL": "postgresql://u:secret@db/farm",
                   "DUBFARM_OUTPUT_CRF": "23", "DUBFARM_SEGMENTS_SECONDS": "2.5", "UNRELATED": "x"]
        let l = try ConfigurationLoader.load(file: repoRoot.appendingPathComponent("coordinator.yml").path, environment: env)
        #expect(l.configuration.liveness == 7)
        #expect(l.configuration.encoder.crf == 23)
        #expect(l.configuration.segmentSeconds == 2.5)
        #expect(l.sources["workers.liveness"] == .environment)
        #expect(l.configuration.databaseURL == "postgresql://u:secret@db/farm")
        let shown = l.render()
        #expect(!shown.contains(":secret@"))
        #expect(shown.contains("postgresql://u:***@db/farm"))
        #expect(shown.contains("DUBFARM_WORKERS_LIVENESS"))
    }

    @Test("invalid values name the key and what is expected", arguments: [
        ("workers:\n  liveness: zero\n", "workers.liveness"),
        ("workers:\n  livenes: 3\n", "did you mean 'workers.liveness'"),
        ("output:\n  crf: 99\n", "output.crf"),
        ("output:\n  preset: turbo\n", "output.preset"),
        ("coordinator:\n  work_endpoint: localhost:5\n", "ZeroMQ endpoint"),
        ("logging:\n  level: loud\n", "logging.level"),
        ("- a\n- b\n", "top level"),
        ("retry: 3\n", "section 'retry'"),
        ("workers:\n  lease_seconds: 2\n", "must exceed"),
        ("key: [unclosed\n", "not valid YAML"),
    ])
    func invalid(yaml: String, mentions: String) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("c.yml")
        try yaml.write(to: f, atomically: true, encoding: .utf8)
        do {
            _ = try ConfigurationLoader.load(file: f.path, environment: [:])
            Issue.record("accepted: \(yaml)")
        } catch let e as DubfarmError {
            #expect(e.code == .configuration)
            #expect(e.message.contains(mentions), "\(e.message)")
        }
    }

    @Test("a bad environment value names the variable")
    func badEnvironment() {
        #expect(throws: DubfarmError.self) { try ConfigurationLoader.load(file: nil, environment: ["DUBFARM_RETRY_MAX_ATTEMPTS": "-1"]) }
    }

    @Test("missing file is reported")
    func missingFile() {
        #expect(throws: DubfarmError.self) { try ConfigurationLoader.load(file: "/nonexistent/dubfarm.yml", environment: [:]) }
    }

    @Test("the database URL can come from a file and is never shown")
    func urlFile() throws {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("url-\(UUID().uuidString)")
        try "postgresql://farm:hunter2@db:5432/dubfarm\n".write(to: f, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: f) }
        let l = try ConfigurationLoader.load(file: nil, environment: ["DUBFARM_DATABASE_URL_FILE": f.path])
        #expect(l.configuration.databaseURL == "postgresql://farm:hunter2@db:5432/dubfarm")
        #expect(!l.render().contains("hunter2"))
    }

    @Test("redaction", arguments: [
        ("postgresql://a:b@h/d", "postgresql://a:***@h/d"),
        ("postgresql://a@h/d", "postgresql://a@h/d"),
        ("host=x password=pw dbname=d", "host=x password=*** dbname=d"),
        ("postgresql:///d?host=/tmp&password=pw", "postgresql:///d?host=/tmp&password=***"),
    ])
    func redaction(url: String, shown: String) {
        #expect(redactURL(url) == shown)
    }
}
