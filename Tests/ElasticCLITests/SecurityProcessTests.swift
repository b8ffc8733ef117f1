import ElasticCore
import ElasticNumerics
import ElasticServices
import ElasticStorage
import ElasticTransport
import ElasticWire
import Foundation
import NIOCore
import Testing
import X509

/// Holes an attacker on the network found (issue 13), reproduced against real processes and
/// shown closed: a node certificate posing as the controller, two processes on one data dir,
/// decompression bombs in a checkpoint, the dashboard read through a foreign host name.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct SecurityProcessTests {
    /// A TLS server on loopback that presents `identity` (a node's certificate from the cluster
    /// CA) and records every frame it gets; it answers a CA request with the CA, as the real
    /// controller would, so that a joining worker goes on to its bootstrap request.
    final class FakeController: @unchecked Sendable {
        let endpoint: Endpoint
        private let server: NIOAsyncChannel<FrameConnection, Never>
        private let lock = NSLock()
        private var kinds: [String] = []
        private var task: Task<Void, Never>?

        var received: [String] { lock.withLock { kinds } }

        init(identity: Identity, ca: Certificate) async throws {
            server = try await FrameChannels.listen(host: "127.0.0.1", port: 0, tls: try TLSContexts.controller(identity: identity, ca: ca))
            endpoint = Endpoint(host: "127.0.0.1", port: server.channel.localAddress?.port ?? 0)
            let server = self.server
            task = Task { [weak self] in
                try? await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        Task { await self?.serve(connection, ca: ca) }
                    }
                }
            }
        }

        private func serve(_ connection: FrameConnection, ca: Certificate) async {
            try? await connection.channel.executeThenClose { inbound, outbound in
                for try await frame in inbound {
                    let message = try? ControlMessage(frame: frame)
                    lock.withLock { kinds.append(message.map { "\($0.kind)" } ?? "undecodable") }
                    if case .caRequest? = message {
                        try await outbound.write(ControlMessage.caBundle(certificateDER: ca.derBytes).frame(generation: .zero))
                    }
                }
            }
        }

        func close() {
            server.channel.close(promise: nil)
            task?.cancel()
        }
    }

    /// A controller on loopback with its data dir `ctl` (no HTTP, `arguments` added), a token
    /// good for `uses` joins, and the CA hash.
    private static func startController(in directory: URL, processes: ProcessGroup, uses: Int = 2, arguments: [String] = []) async throws
        -> (controller: SpawnedProcess, address: String, token: String, hash: String) {
        _ = try await CLI.run(["certs", "init", "--dir", "ctl"], in: directory)
        let controller = try processes.spawn(name: "controller", ["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl", "--http", "off"] + arguments)
        let addressFile = directory.appendingPathComponent("ctl/controller.address")
        try await waitUntil("the controller to listen") { FileManager.default.fileExists(atPath: addressFile.path) }
        let address = try String(contentsOf: addressFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let token = try await CLI.run(["token", "create", "--data-dir", "ctl", "--uses", String(uses)], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let hash = try await CLI.run(["certs", "hash", "--dir", "ctl"], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return (controller, address, token, hash)
    }

    @Test func aNodeCertificateCannotPoseAsTheController() async throws {
        try await withProcesses("elastic-fake-controller") { directory, processes in
            let (_, address, token, hash) = try await Self.startController(in: directory, processes: processes)
            // The attacker: a worker that joined honestly and so holds a node certificate.
            let insider = try processes.spawn(name: "insider", ["join", address, "--token", token, "--ca-hash", hash, "--name", "insider", "--data-dir", "insider", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("the insider to join") { insider.stderr.contains("joined as member") }
            let paths = WorkerPaths(dataDirectory: directory.appendingPathComponent("insider"))
            let stolen = try paths.load()
            let fake = try await FakeController(identity: stolen.identity, ca: stolen.ca)
            defer { fake.close() }

            // Admin commands with the real admin certificate, pointed at the fake.
            for command in [["status"], ["token", "create"]] {
                let result = try await CLI.run(command + ["--data-dir", "ctl", "--controller", fake.endpoint.description], in: directory)
                #expect(result.status != 0, "\(command) went through: \(result.stdout)")
                #expect(result.stderr.contains("not the controller"), "\(command): \(result.stderr)")
            }
            // A worker joining with a token dials the fake: it fetches the CA (public), then
            // refuses to send its token.
            let victim = try processes.spawn(name: "victim", ["join", fake.endpoint.description, "--token", token, "--ca-hash", hash, "--name", "victim", "--data-dir", "victim", "--http", "off"])
            try await waitUntil("the victim to refuse the fake", deadline: .seconds(30)) { victim.stderr.contains("not the controller") || !victim.process.isRunning }
            #expect(victim.stderr.contains("not the controller"), "victim's log: \(victim.stderr)")
            let kinds = fake.received
            #expect(!kinds.isEmpty && kinds.allSatisfy { $0 == "\(ControlMessage.Kind.caRequest)" }, "the fake received \(kinds)")
            // The real controller, for contrast, still serves the admin.
            let real = try await CLI.run(["status", "--data-dir", "ctl"], in: directory)
            #expect(real.status == 0, "\(real.stderr)")
        }
    }

    @Test func aSecondProcessOnADataDirExitsNamingTheHolder() async throws {
        try await withProcesses("elastic-data-dir-lock") { directory, processes in
            let (first, address, token, hash) = try await Self.startController(in: directory, processes: processes)
            let second = try await CLI.run(["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl", "--http", "off"], in: directory, deadline: .seconds(20))
            #expect(second.status != 0)
            #expect(second.stderr.contains("is in use by another elastic process (pid \(first.pid), controller)"), "\(second.stderr)")
            #expect(first.process.isRunning, "the first controller must keep running")

            // Two workers on one data dir: the second exits before it talks to anyone.
            let worker = try processes.spawn(name: "w1", ["join", address, "--token", token, "--ca-hash", hash, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("w1 to join") { worker.stderr.contains("joined as member") }
            let twin = try await CLI.run(["join", address, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"], in: directory, deadline: .seconds(20))
            #expect(twin.status != 0 && twin.stderr.contains("pid \(worker.pid), worker w1"), "\(twin.stderr)")
            #expect(worker.process.isRunning)

            // Once the holder is gone (even by SIGKILL), the data dir is free again.
            first.signal(SIGKILL)
            _ = try await first.waitForExit(deadline: .seconds(10))
            let again = try processes.spawn(name: "controller-2", ["controller", "--listen", address, "--data-dir", "ctl", "--http", "off"])
            try await waitUntil("the restarted controller to run") { again.stderr.contains("listening on") }
            #expect(again.process.isRunning, "\(again.stderr)")
        }
    }

    /// A crafted checkpoint (a few KB) that declares a 32768² or 65536² float tensor: verify
    /// under a 2 GiB address-space limit reports it and exits 2, never aborts.
    @Test(arguments: [32_768, 65_536])
    func aDecompressionBombIsAClearErrorUnderAMemoryLimit(side: Int) async throws {
        try await withProcesses("elastic-bomb") { directory, _ in
            let store = CheckpointStore(root: directory.appendingPathComponent("checkpoints").path)
            var layers: [LayerCheckpoint] = []
            for (index, (fanIn, fanOut)) in [(64, 32), (32, 8)].enumerated() {
                let spec = LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: .relu)
                let state = LayerState(spec: spec, optimizerStep: 1, tensors: [
                    NamedTensor(name: "weight", shape: [fanIn, fanOut], values: (0..<(fanIn * fanOut)).map { Float($0 % 17) / 17 }),
                    NamedTensor(name: "bias", shape: [fanOut], values: [Float](repeating: 0.5, count: fanOut)),
                ])
                layers.append(LayerCheckpoint(index: index, state: state))
            }
            try store.writeLayers(step: 1, part: "all", layers: layers)
            let header = CheckpointHeader(generation: 1, jobName: "bomb", jobSpecHash: "0", dataCursor: CheckpointDataCursor(epoch: 0, offset: 0, samplesConsumed: 0), plan: CheckpointPlan(stages: []))
            let summary = try store.commit(step: 1, header: header, layerCount: layers.count)
            let manifestPath = URL(fileURLWithPath: summary.path).appendingPathComponent(CheckpointManifest.fileName)
            var manifest = try CheckpointReader.readManifest(directory: summary.path)
            manifest.blobs[0].spec = LayerSpec(fanIn: side, fanOut: side, activation: .relu)
            manifest.blobs[0].tensors[0].shape = [side, side]
            manifest.blobs[0].tensors[0].rawBytes = side * side * 4
            manifest.blobs[0].tensors[1].shape = [side]
            manifest.blobs[0].tensors[1].rawBytes = side * 4
            try Data(manifest.encoded()).write(to: manifestPath)

            let script = "ulimit -v 2097152; exec \"$0\" checkpoint verify \"$1\""
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", script, CLI.binary.path, summary.path]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationReason == .exit && process.terminationStatus == 2, "status \(process.terminationStatus): \(text)")
            #expect(text.contains("more than zstd can expand"), "\(text)")
            #expect(!text.contains("ExitCode"), "\(text)")
        }
    }

    @Test func theDashboardAnswersOnlyTheHostsItServes() async throws {
        try await withProcesses("elastic-host") { directory, processes in
            _ = try await CLI.run(["certs", "init", "--dir", "ctl"], in: directory)
            _ = try processes.spawn(name: "controller", ["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl", "--http", "127.0.0.1:0", "--http-allow-host", "dashboard.example"])
            let file = directory.appendingPathComponent("ctl/http.address")
            try await waitUntil("the dashboard to listen") { FileManager.default.fileExists(atPath: file.path) }
            let address = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let port = Int(address.split(separator: ":").last ?? "") ?? 0
            for (host, status) in [("127.0.0.1:\(port)", 200), ("localhost:\(port)", 200), ("[::1]:\(port)", 200), ("dashboard.example:\(port)", 200),
                                   ("attacker.example:\(port)", 403), ("attacker.example", 403), ("127.0.0.1.attacker.example", 403)] {
                let reply = try rawHTTPGet(port: port, path: "/api/state", host: host)
                #expect(reply.hasPrefix("HTTP/1.1 \(status)"), "Host \(host): \(reply.prefix(200))")
            }
        }
    }

    /// A node that is not a member (it left) still holds a valid node certificate: a worker's
    /// data plane closes its link at once, before any frame of it is read.
    @Test func aNodeOutsideThePlanCannotOpenADataPlaneLink() async throws {
        try await withProcesses("elastic-data-plane") { directory, processes in
            let (_, address, token, hash) = try await Self.startController(in: directory, processes: processes, uses: 2)
            let outsider = try processes.spawn(name: "outsider", ["join", address, "--token", token, "--ca-hash", hash, "--name", "outsider", "--data-dir", "outsider", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("the outsider to join") { outsider.stderr.contains("joined as member") }
            outsider.signal(SIGTERM)
            #expect(try await outsider.waitForExit(deadline: .seconds(20)) == 0)
            let worker = try processes.spawn(name: "w1", ["join", address, "--token", token, "--ca-hash", hash, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("w1 to join") { worker.stderr.contains("joined as member") }
            let line = try #require(worker.stderr.split(separator: "\n").first { $0.contains("data plane listening on ") })
            let endpoint = try #require(Endpoint(parsing: String(line.split(separator: " ").last ?? "")))

            let stolen = try WorkerPaths(dataDirectory: directory.appendingPathComponent("outsider")).load()
            let connection = try await FrameChannels.connect(
                host: endpoint.host, port: endpoint.port, tls: try TLSContexts.mutualClient(identity: stolen.identity, ca: stolen.ca),
                expecting: .node("w1"))
            let status = try await CLI.run(["status", "--json", "--data-dir", "ctl"], in: directory)
            let generation = try JSONDecoder().decode(StatusReport.self, from: Data(status.stdout.utf8)).generation
            // A hello for a generation still to come would be parked (kept open) from a member;
            // from the outsider the link must end at once.
            let closer = Task {
                try await Task.sleep(for: .seconds(10))
                connection.channel.channel.close(promise: nil)
            }
            let started = ContinuousClock.now
            let frames: Int = try await connection.channel.executeThenClose { inbound, outbound in
                try? await outbound.write(DataMessage.hello.frame(generation: Generation(generation + 5)))
                var count = 0
                do { for try await _ in inbound { count += 1 } } catch {}
                return count
            }
            closer.cancel()
            #expect(ContinuousClock.now - started < .seconds(10), "the outsider's link stayed open")
            #expect(frames == 0, "the outsider's link got \(frames) frame(s)")
            #expect(!worker.stderr.contains("from outsider"), "w1 heard the outsider: \(worker.stderr)")
        }
    }

    /// `elastic node revoke`: the member is cut off within a heartbeat and its worker stops; the
    /// certificate is refused on every later connection, also by a restarted controller; the
    /// name can join again only with a new token, and that bootstrap revokes nothing it needs.
    @Test func aRevokedNodeIsCutOffAndStaysOut() async throws {
        try await withProcesses("elastic-revoke") { directory, processes in
            let (controller, address, token, hash) = try await Self.startController(in: directory, processes: processes, uses: 3)
            var workers: [String: SpawnedProcess] = [:]
            for name in ["w1", "w2"] {
                workers[name] = try processes.spawn(name: name, ["join", address, "--token", token, "--ca-hash", hash, "--name", name, "--data-dir", name, "--data-listen", "127.0.0.1:0", "--http", "off"])
            }
            try await waitUntil("both to join") { workers.values.allSatisfy { $0.stderr.contains("joined as member") } }
            let serial = try WorkerPaths(dataDirectory: directory.appendingPathComponent("w2")).load().identity.certificate.serialNumber.description

            let revoked = try await CLI.run(["node", "revoke", "w2", "--data-dir", "ctl"], in: directory)
            #expect(revoked.status == 0 && revoked.stdout.contains("revoked 1 certificate(s) of w2 (serial \(serial))"), "\(revoked.stdout) \(revoked.stderr)")
            // Cut off at once: declared dead for its revocation, its worker stops for good.
            #expect(controller.stderr.contains("w2 incarnation") && controller.stderr.contains("declared dead (its certificate was revoked"), "\(controller.stderr)")
            let exit = try await workers["w2"]!.waitForExit(deadline: .seconds(20))
            #expect(exit != 0 && workers["w2"]!.stderr.contains("this certificate was revoked"), "w2: \(workers["w2"]!.stderr)")
            let status = try await CLI.run(["status", "--json", "--data-dir", "ctl"], in: directory)
            let report = try JSONDecoder().decode(StatusReport.self, from: Data(status.stdout.utf8))
            #expect(report.members.first { $0.node == "w2" }?.state == "dead" && report.members.first { $0.node == "w1" }?.state == "alive")
            let again = try await CLI.run(["node", "revoke", "w2", "--data-dir", "ctl"], in: directory)
            #expect(again.status != 0 && again.stderr.contains("no unrevoked certificate"), "\(again.stderr)")

            // A restarted controller still refuses the certificate (it is in the journal).
            controller.signal(SIGKILL)
            _ = try await controller.waitForExit(deadline: .seconds(10))
            let restarted = try processes.spawn(name: "controller-2", ["controller", "--listen", address, "--data-dir", "ctl", "--http", "off"])
            try await waitUntil("the restarted controller to listen") { restarted.stderr.contains("listening on") }
            let retry = try await CLI.run(["join", address, "--name", "w2", "--data-dir", "w2", "--data-listen", "127.0.0.1:0", "--http", "off"], in: directory, deadline: .seconds(30))
            #expect(retry.status != 0 && retry.stderr.contains("this certificate was revoked"), "\(retry.stderr)")

            // The name joins again with a token and a fresh data dir.
            let fresh = try processes.spawn(name: "w2-new", ["join", address, "--token", token, "--ca-hash", hash, "--name", "w2", "--data-dir", "w2-new", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("w2 to join again") { fresh.stderr.contains("joined as member") }
            #expect(workers["w1"]!.process.isRunning)

            // A name bootstrapped again (its old worker died) revokes its old certificate.
            workers["w1"]!.signal(SIGKILL)
            _ = try await workers["w1"]!.waitForExit(deadline: .seconds(10))
            try await waitUntil("w1 to be declared dead", deadline: .seconds(30)) { restarted.stderr.contains("w1 incarnation") && restarted.stderr.contains("declared dead") }
            let token2 = try await CLI.run(["token", "create", "--data-dir", "ctl"], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let replacement = try processes.spawn(name: "w1-new", ["join", address, "--token", token2, "--ca-hash", hash, "--name", "w1", "--data-dir", "w1-new", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("the new w1 to join") { replacement.stderr.contains("joined as member") }
            #expect(restarted.stderr.contains("certificate(s) of w1 revoked (replaced by a new bootstrap of w1)"), "\(restarted.stderr)")
            let old = try await CLI.run(["join", address, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"], in: directory, deadline: .seconds(30))
            #expect(old.status != 0 && old.stderr.contains("this certificate was revoked"), "\(old.stderr)")
        }
    }

    /// A node certificate that expires while its worker is a member ends the session (TLS
    /// checked it only at the handshake): the member is declared dead, and the worker stops,
    /// saying how to join again.
    @Test func anExpiredCertificateEndsItsSession() async throws {
        try await withProcesses("elastic-expiry") { directory, processes in
            let (controller, address, token, hash) = try await Self.startController(in: directory, processes: processes, uses: 1, arguments: ["--node-cert-lifetime", "15s"])
            let worker = try processes.spawn(name: "w1", ["join", address, "--token", token, "--ca-hash", hash, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("w1 to join") { worker.stderr.contains("joined as member") }
            try await waitUntil("the session to end at the certificate's expiry", deadline: .seconds(30)) {
                controller.stderr.contains("the certificate of elastic-node w1 expired") && controller.stderr.contains("w1 incarnation 1 declared dead")
            }
            let status = try await worker.waitForExit(deadline: .seconds(20))
            #expect(status != 0 && worker.stderr.contains("node certificate expired") && worker.stderr.contains("join again"), "w1: \(worker.stderr)")
        }
    }

    /// 300 connections that never finish their TLS handshake (each sends the first bytes of a
    /// ClientHello, then trickles): the controller closes those beyond its cap at once and the
    /// rest at the handshake deadline, its memory stays small, and a member keeps its session.
    @Test func aFloodOfStalledConnectionsIsCutOffAndAMemberKeepsItsSession() async throws {
        try await withProcesses("elastic-flood") { directory, processes in
            let (controller, address, token, hash) = try await Self.startController(in: directory, processes: processes, uses: 1)
            let port = Int(address.split(separator: ":").last ?? "") ?? 0
            let worker = try processes.spawn(name: "w1", ["join", address, "--token", token, "--ca-hash", hash, "--name", "w1", "--data-dir", "w1", "--data-listen", "127.0.0.1:0", "--http", "off"])
            try await waitUntil("w1 to join") { worker.stderr.contains("joined as member") }

            var sockets: [Int32] = []
            defer { for socket in sockets { close(socket) } }
            for _ in 0..<300 {
                let socket = makeTCPSocket()
                guard connectLoopback(socket, port: port) else { close(socket); continue }
                // A TLS handshake record header announcing a 512-byte ClientHello, and 1 byte of it.
                _ = [UInt8]([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).withUnsafeBytes { send(socket, $0.baseAddress, $0.count, 0) }
                sockets.append(socket)
            }
            #expect(sockets.count == 300)
            var open = Set(sockets)
            try await waitUntil("the controller to close every stalled connection", deadline: .seconds(30)) {
                for socket in open {
                    _ = [UInt8]([0x00]).withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    var byte: UInt8 = 0
                    let count = recv(socket, &byte, 1, Int32(MSG_DONTWAIT))
                    if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { open.remove(socket) }
                }
                return open.isEmpty
            }
            let rss = residentKiB(pid: controller.pid)
            #expect(rss.map { $0 < 300 * 1024 } == true, "controller RSS \(rss.map { "\($0 / 1024) MiB" } ?? "unknown")")
            let status = try await CLI.run(["status", "--json", "--data-dir", "ctl"], in: directory)
            let report = try JSONDecoder().decode(StatusReport.self, from: Data(status.stdout.utf8))
            #expect(report.members.map(\.node) == ["w1"] && report.members.first?.state == "alive", "\(report.members)")
            #expect(!worker.stderr.contains("lost the controller") && !worker.stderr.contains("fenced"), "\(worker.stderr)")
        }
    }

    private func residentKiB(pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    private func connectLoopback(_ socket: Int32, port: Int) -> Bool {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// One GET over a plain socket, with the Host header given (what a browser sends).
    private func rawHTTPGet(port: Int, path: String, host: String) throws -> String {
        let socket = makeTCPSocket()
        defer { close(socket) }
        guard connectLoopback(socket, port: port) else { throw HarnessError("cannot connect to 127.0.0.1:\(port)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, 0) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            reply += buffer[..<count]
        }
        return String(decoding: reply, as: UTF8.self)
    }
}

private func makeTCPSocket() -> Int32 { socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) }
