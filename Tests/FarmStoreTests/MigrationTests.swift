import DubfarmCore
@testable import FarmStore
import FarmTestSupport
import Foundation
import Postgres
import Testing

@Suite("Migrations")
struct MigrationTests {
    @Test("migrations apply once, in order, and are recorded")
    func applyOnce() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let store = db.store()
        #expect(try await store.schemaVersion() == 0)
        await #expect(throws: DubfarmError.self) { try await store.checkSchema() }
        let first = try await store.migrate()
        #expect(first.map(\.version) == Migration.embedded.map(\.version))
        let second = try await store.migrate()
        #expect(second.isEmpty)
        #expect(try await store.schemaVersion() == Migration.latestVersion)
        try await store.checkSchema()
        let c = try PostgresConnection(url: db.url)
        let rows = try c.query("SELECT version, name, checksum = md5($1) AS ok FROM schema_migrations ORDER BY version",
                               [.text(Migration.embedded[0].sql)])
        #expect(rows.count == Migration.embedded.count)
        #expect(try rows[0]["name"].decode(String.self) == "initial")
        #expect(try rows[0]["ok"].decode(Bool.self))
    }

    @Test("two migrators at once: the schema is applied exactly once")
    func concurrentMigrators() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let a = db.store(), b = db.store()
        async let ra = a.migrate()
        async let rb = b.migrate()
        let (x, y) = try await (ra, rb)
        #expect(x.count + y.count == Migration.embedded.count)
    }

    @Test("a newer schema is refused with an upgrade message; an older one asks for migrate")
    func versionChecks() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let store = db.store()
        let next = Migration(version: Migration.latestVersion + 1, name: "future", sql: "CREATE TABLE future_thing (x int)")
        try await store.migrate(Migration.embedded + [next])
        do {
            try await store.checkSchema()
            Issue.record("expected schemaTooNew")
        } catch let e as DubfarmError {
            #expect(e.code == .schemaTooNew)
            #expect(e.message == "database schema is version \(next.version) but this dubfarm knows up to \(Migration.latestVersion); upgrade dubfarm")
        }
        await #expect(throws: DubfarmError(.schemaTooNew,
                                           "database schema is version \(next.version) but this dubfarm knows up to \(Migration.latestVersion); upgrade dubfarm")) {
            try await store.migrate()
        }

        let old = try await TestDatabase.create(migrated: false)
        defer { old.drop() }
        let oldStore = old.store()
        try await oldStore.migrate(Migration.embedded)
        // Pretend the newest migration was never applied: checkSchema asks for `dubfarm migrate`.
        let c = try PostgresConnection(url: old.url)
        try c.query("DELETE FROM schema_migrations WHERE version = $1", [.int(Migration.latestVersion)])
        do {
            try await oldStore.checkSchema()
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(e.code == .configuration)
            #expect(e.message.contains("run `dubfarm migrate`"))
        }
    }

    @Test("a migration edited after it was applied is an error, not skipped")
    func editedMigration() async throws {
        let db = try await TestDatabase.create(migrated: true)
        defer { db.drop() }
        var edited = Migration.embedded
        edited[0].sql += "\n-- edited"
        do {
            try await db.store().migrate(edited)
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(e.message.contains("changed after it was applied"))
        }
    }

    @Test("a failing migration rolls back entirely and is not recorded")
    func failingMigration() async throws {
        let db = try await TestDatabase.create(migrated: true)
        defer { db.drop() }
        let bad = Migration(version: Migration.latestVersion + 1, name: "bad",
                            sql: "CREATE TABLE half_done (x int); SELECT * FROM missing_table;")
        await #expect(throws: DubfarmError.self) { try await db.store().migrate(Migration.embedded + [bad]) }
        let c = try PostgresConnection(url: db.url)
        #expect(try c.query("SELECT to_regclass('half_done') IS NULL AS gone")[0]["gone"].decode(Bool.self))
        #expect(try await db.store().schemaVersion() == Migration.latestVersion)
    }

    @Test("the embedded SQL equals Migrations/*.sql (run tools/gen-migrations.sh if not)")
    func embeddedMatchesFiles() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let dir = root.appendingPathComponent("Migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.count == Migration.embedded.count, "run tools/gen-migrations.sh")
        for (file, m) in zip(files, Migration.embedded) {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            #expect(file == "\(m).sql", "run tools/gen-migrations.sh")
            #expect(text == m.sql + "\n" || text == m.sql, "\(file) differs from its embedded copy: run tools/gen-migrations.sh")
        }
    }
}
