import DubfarmCore
import Foundation
import Testing
@testable import FarmConfig

@Suite("Configuration: metrics.listen")
struct MetricsListenTests {
    @Test("HOST:PORT, [IPv6]:PORT and :PORT parse; empty turns the server off")
    func parse() throws {
        func parsed(_ s: String) throws -> String? { try FarmConfiguration.parseListen(s).map { "\($0.host) \($0.port)" } }
        #expect(try parsed("127.0.0.1:9464") == "127.0.0.1 9464")
        #expect(try parsed("[::1]:80") == "::1 80")
        #expect(try parsed(":9464") == "0.0.0.0 9464")
        #expect(try FarmConfiguration.parseListen("") == nil)
        for bad in ["9464", "host:", "host:port", "h:70000", "h:-1"] {
            #expect(throws: DubfarmError.self, "\(bad)") { try FarmConfiguration.parseListen(bad) }
        }
    }

    @Test("DUBFARM_METRICS_LISTEN overrides the file; a bad value names the key")
    func environment() throws {
        let file = repoRoot.appendingPathComponent("coordinator.yml").path
        #expect(try ConfigurationLoader.load(file: file, environment: [:]).configuration.metricsListen == "127.0.0.1:9464")
        let l = try ConfigurationLoader.load(file: file, environment: ["DUBFARM_METRICS_LISTEN": ""])
        #expect(l.configuration.metricsListen == "")
        #expect(l.sources["metrics.listen"] == .environment)
        let e = #expect(throws: DubfarmError.self) { try ConfigurationLoader.load(file: file, environment: ["DUBFARM_METRICS_LISTEN": "nope"]) }
        #expect(e?.message.contains("metrics.listen") == true)
    }

    @Test("config check --json lists every key with its value and source, secrets redacted")
    func effectiveSettings() throws {
        let l = try ConfigurationLoader.load(file: nil, environment: ["DUBFARM_DATABASE_URL": "postgresql://u:secret@db/farm"])
        let s = l.effectiveSettings
        #expect(s.map(\.key) == ConfigKey.all.map(\.path))
        let db = try #require(s.first { $0.key == "database.url" })
        #expect(db.value == "postgresql://u:***@db/farm" && db.source == "environment" && db.environment == "DUBFARM_DATABASE_URL")
        #expect(s.first { $0.key == "metrics.listen" }?.value == "127.0.0.1:9464")
    }
}
