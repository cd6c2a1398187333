import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import LocalFarm
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Local cluster and store connection")
struct ClusterAndConnectionTests {
    @Test("a cluster initialises, starts, stops and restarts idempotently")
    func clusterLifecycle() throws {
        let dir = URL(fileURLWithPath: "/tmp/dubfarm-cluster-test-\(getpid())-\(UInt16.random(in: 0...UInt16.max))")
        defer {
            try? FileManager.default.removeItem(at: dir)
            try? FileManager.default.removeItem(atPath: dir.path + ".lock")
        }
        let cluster = try PostgresCluster(directory: dir, port: 5433, ephemeral: true)
        #expect(!cluster.usesFallback && cluster.root == dir.standardizedFileURL)
        #expect(!cluster.isRunning)
        #expect(try cluster.initIfNeeded())
        #expect(try !cluster.initIfNeeded())
        try cluster.start()
        try cluster.start()
        #expect(cluster.isRunning)
        #expect(try cluster.createDatabase("farm"))
        #expect(try !cluster.createDatabase("farm"))
        let c = try PostgresConnection(url: cluster.url(database: "farm"))
        #expect(try c.query("SELECT current_database() AS d")[0]["d"].decode(String.self) == "farm")
        c.close()
        try cluster.stop()
        try cluster.stop()
        #expect(!cluster.isRunning)
        try cluster.start()  // data survives a restart
        #expect(try !cluster.createDatabase("farm"))
        try cluster.dropDatabase("farm")
        try cluster.stop()
    }

    @Test("a directory the postgres user cannot reach, or too long for a socket, falls back to /tmp")
    func fallback() throws {
        let long = URL(fileURLWithPath: "/tmp/" + String(repeating: "x", count: 120))
        let c1 = try PostgresCluster(directory: long)
        #expect(c1.usesFallback && c1.root.path.hasPrefix("/tmp/dubfarm-pg-"))
        #expect(try PostgresCluster(directory: long).root == c1.root)  // stable
        if getuid() == 0 {
            let c2 = try PostgresCluster(directory: URL(fileURLWithPath: "/root/.dubfarm-test/pg"))
            #expect(c2.usesFallback && c2.root.path.hasPrefix("/tmp/dubfarm-pg-"))
            #expect(c2.url(database: "farm").contains("host=/tmp/dubfarm-pg-"))
        }
    }

    @Test("connect(retryFor:) gives up with .unreachable, naming the host, never the password")
    func connectGivesUp() async throws {
        let secret = "hunter2-xyz"
        let store = FarmStore(url: "postgresql://farm:\(secret)@/farm?host=/tmp/no-such-dubfarm-socket&port=5999")
        #expect(!store.target.contains(secret))
        let start = Date()
        do {
            try await store.connect(retryFor: 0.5)
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(e.code == .unreachable)
            #expect(e.message.contains("/tmp/no-such-dubfarm-socket"))
            #expect(!e.message.contains(secret))
        }
        #expect(Date().timeIntervalSince(start) >= 0.4)
    }

    @Test("a store whose connection was killed fails that call, then reconnects by itself")
    func reconnects() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        _ = try await store.createJob(NewJob(videoName: "v", audioName: "a"))
        let admin = try PostgresConnection(url: db.url)
        try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        [.text(db.name)])
        var failures = 0
        var jobs: [JobRecord] = []
        for _ in 0..<3 {
            do {
                jobs = try await store.jobs()
                break
            } catch let e as DubfarmError {
                #expect(e.code == .unreachable)
                failures += 1
            }
        }
        #expect(failures <= 1 && jobs.count == 1)
    }
}
