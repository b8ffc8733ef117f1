import ElasticServices
import Foundation
import Testing

/// A real cluster of processes (issue 2, test 3): a controller and three `elastic join`
/// processes; SIGKILL one, SIGSTOP another, SIGCONT it, and check what the controller reports.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ClusterProcessTests {
    @Test func killStopAndContinueWorkers() async throws {
        try await withProcesses("cluster", scenario)
    }

    private func scenario(_ directory: URL, _ processes: ProcessGroup) async throws {
        let data = directory.appendingPathComponent("controller").path
        let initResult = try await CLI.run(["certs", "init", "--dir", data], in: directory)
        try #require(initResult.status == 0, "certs init failed: \(initResult.stderr)")
        let hash = try await CLI.run(["certs", "hash", "--dir", data], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(hash.hasPrefix("sha256:") && hash.count == 71)

        // Default timeouts: heartbeat 500ms, suspect after 1s, dead after 2s, reconnect grace 500ms.
        let deadTimeoutMs = 2000
        let reconnectGraceMs = 500
        let controller = try processes.spawn(name: "controller", ["controller", "--listen", "127.0.0.1:0", "--data-dir", data])
        let addressFile = directory.appendingPathComponent("controller/controller.address")
        try await waitUntil("the controller to listen") { FileManager.default.fileExists(atPath: addressFile.path) }
        let address = try String(contentsOf: addressFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

        let token = try await CLI.run(["token", "create", "--data-dir", data, "--uses", "3"], in: directory)
        try #require(token.status == 0, "token create failed: \(token.stderr)")
        let tokenText = token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        var workers: [String: SpawnedProcess] = [:]
        for name in ["w1", "w2", "w3"] {
            workers[name] = try processes.spawn(name: name, [
                "join", address, "--token", tokenText, "--ca-hash", hash, "--name", name,
                "--data-dir", directory.appendingPathComponent(name).path,
            ])
        }
        try await waitUntil("three alive members") { try await status(data, directory).alive.count == 3 }
        let start = try await status(data, directory)
        let w3Incarnation = try #require(start.member("w3")).incarnation

        // SIGKILL: the connection drops, the member is suspect at once and dead after the grace.
        workers["w1"]!.signal(SIGKILL)
        try await waitUntil("w1 to be declared dead") { try await status(data, directory).member("w1")?.state == "dead" }
        let afterKill = try await status(data, directory)
        #expect(afterKill.generation > start.generation)
        let w1Death = try #require(events(data).last { $0["event"] as? String == "died" && $0["node"] as? String == "w1" })
        #expect(w1Death["reason"] as? String == "disconnected and did not reconnect")
        let w1Silence = try #require(w1Death["silentForMs"] as? Int)
        // Detected by the connection loss: well inside the dead timeout (slack for a loaded machine).
        #expect(w1Silence <= deadTimeoutMs + 1000, "w1 was declared dead after \(w1Silence) ms of silence")
        #expect(events(data).contains { $0["event"] as? String == "suspected" && $0["node"] as? String == "w1" && $0["reason"] as? String == "connection lost" })

        // SIGSTOP: the connection stays open but heartbeats stop; dead after the timeout, not before.
        let w2Before = try #require(afterKill.member("w2"))
        workers["w2"]!.signal(SIGSTOP)
        try await waitUntil("w2 to be declared dead") { try await status(data, directory).member("w2")?.state == "dead" }
        let afterStop = try await status(data, directory)
        #expect(afterStop.generation > afterKill.generation)
        let w2Death = try #require(events(data).last { $0["event"] as? String == "died" && $0["node"] as? String == "w2" })
        #expect(w2Death["reason"] as? String == "no heartbeat within the dead timeout")
        let w2Silence = try #require(w2Death["silentForMs"] as? Int)
        #expect(w2Silence >= deadTimeoutMs && w2Silence <= deadTimeoutMs + reconnectGraceMs + 1000, "w2 silent for \(w2Silence) ms")

        // SIGCONT: its old incarnation is fenced; it joins again as a new member.
        workers["w2"]!.signal(SIGCONT)
        try await waitUntil("w2 to rejoin as a new member") {
            guard let w2 = try await status(data, directory).member("w2") else { return false }
            return w2.state == "alive" && w2.incarnation > w2Before.incarnation
        }
        let final = try await status(data, directory)
        #expect(final.generation > afterStop.generation)
        #expect(workers["w2"]!.stderr.contains("fenced by the controller: member w2 incarnation \(w2Before.incarnation) was declared dead"))
        let rejoin = events(data).last { $0["event"] as? String == "joined" && $0["node"] as? String == "w2" }
        #expect((rejoin?["incarnation"] as? Int).map(UInt64.init) == final.member("w2")?.incarnation)
        // The untouched worker kept its incarnation through all of it.
        #expect(final.member("w3")?.state == "alive")
        #expect(final.member("w3")?.incarnation == w3Incarnation)
        // Generations only grow in the event log.
        let generations = events(data).compactMap { $0["generation"] as? Int }
        #expect(generations == generations.sorted())

        // Graceful stop: workers leave, the controller shuts down, all with status 0.
        for name in ["w2", "w3"] { workers[name]!.signal(SIGTERM) }
        for name in ["w2", "w3"] { #expect(try await workers[name]!.waitForExit(deadline: .seconds(15)) == 0) }
        controller.signal(SIGTERM)
        #expect(try await controller.waitForExit(deadline: .seconds(15)) == 0)
        let left = events(data).filter { $0["event"] as? String == "left" }.compactMap { $0["node"] as? String }
        #expect(Set(left) == ["w2", "w3"])
    }
}

private struct Snapshot {
    let report: StatusReport
    var generation: UInt64 { report.generation }
    var alive: [StatusReport.Member] { report.members.filter { $0.state == "alive" } }
    func member(_ node: String) -> StatusReport.Member? { report.members.first { $0.node == node } }
}

private func status(_ data: String, _ directory: URL) async throws -> Snapshot {
    let result = try await CLI.run(["status", "--json", "--data-dir", data], in: directory)
    guard result.status == 0 else { throw HarnessError("elastic status failed: \(result.stderr)") }
    return Snapshot(report: try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8)))
}

private func events(_ data: String) -> [[String: Any]] {
    let text = (try? String(contentsOfFile: data + "/events.jsonl", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}
