import Crypto
import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import NIOCore
import ServiceLifecycle
import Testing
import X509
@testable import ElasticServices

/// Joining and refusals over real TLS on loopback (issue 2, test 2). Every refusal must come
/// with a clear error and leave the membership as it was.
@Suite(.timeLimit(.minutes(2)))
struct MutualTLSTests {
    /// A worker that bootstraps with a token, then runs its session until the controller counts it.
    @Test func validWorkerJoinsAndIsCounted() async throws {
        try await TestController.with { controller in
            let token = try await controller.admin.createToken(ttl: .seconds(3600), uses: 1, description: "test").token
            let directory = temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let paths = WorkerPaths(dataDirectory: directory)
            let (identity, ca) = try await JoinBootstrap.run(controller: controller.endpoint, token: token, caHash: controller.caHash, name: "node-a", paths: paths)
            #expect(PKI.commonName(of: identity.certificate) == "node-a")
            #expect(PKI.role(of: identity.certificate) == .node)
            #expect(identity.certificate.notValidAfter < Date().addingTimeInterval(8 * 86400), "node certificates have a bounded lifetime")
            #expect(paths.hasIdentity)

            let worker = WorkerService(
                configuration: WorkerConfiguration(controller: controller.endpoint, identity: identity, ca: ca, capacity: Capacity(cores: 2, memoryBytes: 1 << 30, gflops: 5), softwareVersion: "test"),
                logger: controller.log.logger("worker"))
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [.init(service: worker)], logger: controller.log.logger("worker-group")))
            let task = Task { try await group.run() }
            try await controller.waitUntil("node-a to be alive") {
                try await controller.admin.status().members.contains { $0.node == "node-a" && $0.state == .alive }
            }
            let status = try await controller.admin.status()
            let member = try #require(status.members.first { $0.node == "node-a" })
            #expect(member.capacity == Capacity(cores: 2, memoryBytes: 1 << 30, gflops: 5))
            #expect(status.generation == member.incarnation)

            // A restarted worker rejoins with its stored certificate and no token.
            let (reloaded, _) = try paths.load()
            #expect(reloaded.certificate == identity.certificate)

            // A graceful leave takes it out and bumps the generation.
            await group.triggerGracefulShutdown()
            try await task.value
            let after = try await controller.admin.status()
            #expect(after.generation > status.generation)
            #expect(after.members.first { $0.node == "node-a" }?.state == .left)
        }
    }

    @Test func connectionWithoutClientCertificateIsRefused() async throws {
        try await TestController.with { controller in
            let before = try await controller.admin.status()
            let tls = try TLSContexts.serverAuthenticatedClient(ca: try controller.authority.certificate)
            let hello = ControlMessage.hello(Hello(resuming: nil, capacity: Capacity(cores: 1, memoryBytes: 1, gflops: 1), softwareVersion: "x"))
            let error = await #expect(throws: ElasticError.self) {
                _ = try await ControlClient.exchange(hello, with: controller.endpoint, tls: tls)
            }
            #expect(error?.message.contains("needs a client certificate") == true, "got: \(String(describing: error))")
            try await expectUnchanged(controller, since: before)
        }
    }

    @Test func certificateFromAnotherCAIsRefused() async throws {
        try await TestController.with { controller in
            let before = try await controller.admin.status()
            let foreign = try CertificateAuthority.create(name: "someone else's CA")
            let intruder = try foreign.issueIdentity(name: "intruder", role: .node, lifetime: 3600)
            // It trusts our CA (so the handshake gets as far as the client certificate) and also
            // tries the admin role.
            let tls = try TLSContexts.mutualClient(identity: intruder, ca: try controller.authority.certificate)
            for request in [ControlMessage.hello(Hello(resuming: nil, capacity: Capacity(cores: 1, memoryBytes: 1, gflops: 1), softwareVersion: "x")), .statusRequest] {
                let error = await #expect(throws: ElasticError.self) {
                    _ = try await ControlClient.exchange(request, with: controller.endpoint, tls: tls)
                }
                #expect(error?.message.contains("certificate") == true, "got: \(String(describing: error))")
            }
            try await expectUnchanged(controller, since: before)
        }
    }

    @Test func expiredCertificateIsRefused() async throws {
        try await TestController.with { controller in
            let before = try await controller.admin.status()
            let expired = try controller.authority.issueIdentity(
                name: "stale-node", role: .node, notBefore: Date().addingTimeInterval(-2 * 86400), lifetime: 86400)
            let tls = try TLSContexts.mutualClient(identity: expired, ca: try controller.authority.certificate)
            let error = await #expect(throws: ElasticError.self) {
                _ = try await ControlClient.exchange(.hello(Hello(resuming: nil, capacity: Capacity(cores: 1, memoryBytes: 1, gflops: 1), softwareVersion: "x")), with: controller.endpoint, tls: tls)
            }
            #expect(error?.message.contains("certificate") == true, "got: \(String(describing: error))")
            try await expectUnchanged(controller, since: before)

            // The worker side refuses to use an expired certificate too, and says what to do.
            let directory = temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let paths = WorkerPaths(dataDirectory: directory)
            try PKIFiles.write(expired, certificate: paths.certificate, key: paths.key)
            try PKIFiles.write(try controller.authority.certificate, to: paths.ca)
            let loadError = #expect(throws: ElasticError.self) { _ = try paths.load() }
            #expect(loadError?.message.contains("expired") == true)
        }
    }

    @Test func wrongTokensAreRefused() async throws {
        try await TestController.with { controller in
            let good = try await controller.admin.createToken(ttl: .seconds(3600), uses: nil, description: "").token
            let id = String(good.prefix(6))
            // A wrong secret and an unknown id get the same answer: no id can be probed.
            let cases: [(token: String, expected: String)] = [
                (id + ".0000000000000000", "is not valid here (unknown, revoked, or a wrong secret)"),
                ("zzzzzz.0000000000000000", "is not valid here (unknown, revoked, or a wrong secret)"),
            ]
            for (token, expected) in cases {
                let before = try await controller.admin.status()
                let error = await #expect(throws: ElasticError.self) { try await bootstrap(controller, token: token, name: "node-w") }
                #expect(error?.message.contains(expected) == true, "got: \(String(describing: error))")
                try await expectUnchanged(controller, since: before)
            }
            // The refused attempts spent no use of the good token.
            #expect(try await controller.admin.listTokens().first { $0.id == id }?.uses == 0)
        }
    }

    @Test func expiredTokenIsRefused() async throws {
        var expiredToken = ""
        try await TestController.with(prepare: { directory in
            var store = try TokenStore(file: directory.appendingPathComponent("tokens.json"))
            let now = Int64(Date().timeIntervalSince1970)
            expiredToken = try store.create(ttl: .seconds(60), uses: nil, description: "old", now: now - 3600).token
        }) { controller in
            let before = try await controller.admin.status()
            let error = await #expect(throws: ElasticError.self) { try await bootstrap(controller, token: expiredToken, name: "node-e") }
            #expect(error?.message.contains("expired") == true, "got: \(String(describing: error))")
            try await expectUnchanged(controller, since: before)
        }
    }

    @Test func tokenUsedMoreThanItsUsesIsRefused() async throws {
        try await TestController.with { controller in
            let token = try await controller.admin.createToken(ttl: .seconds(3600), uses: 1, description: "").token
            try await bootstrap(controller, token: token, name: "first")
            let before = try await controller.admin.status()
            let error = await #expect(throws: ElasticError.self) { try await bootstrap(controller, token: token, name: "second") }
            #expect(error?.message.contains("already used") == true, "got: \(String(describing: error))")
            try await expectUnchanged(controller, since: before)
            let listed = try await controller.admin.listTokens()
            #expect(listed.count == 1 && listed[0].uses == 1 && listed[0].usesLeft == 0)
        }
    }

    @Test func controllerWithAnotherCAHashIsRefusedByTheWorker() async throws {
        try await TestController.with { controller in
            let token = try await controller.admin.createToken(ttl: .seconds(3600), uses: nil, description: "").token
            let otherHash = try CertificateAuthority.create().hash
            let directory = temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let error = await #expect(throws: ElasticError.self) {
                _ = try await JoinBootstrap.run(controller: controller.endpoint, token: token, caHash: otherHash, name: "node-h", paths: WorkerPaths(dataDirectory: directory))
            }
            #expect(error?.message.contains("does not match --ca-hash") == true, "got: \(String(describing: error))")
            #expect(!WorkerPaths(dataDirectory: directory).hasIdentity, "nothing is stored after a refused join")
            #expect(try await controller.admin.listTokens()[0].uses == 0, "the token was never sent")
        }
    }

    @Test func revokedTokenIsRefused() async throws {
        try await TestController.with { controller in
            let token = try await controller.admin.createToken(ttl: nil, uses: nil, description: "").token
            _ = try await controller.admin.revokeToken(id: String(token.prefix(6)))
            #expect(try await controller.admin.listTokens().isEmpty)
            let error = await #expect(throws: ElasticError.self) { try await bootstrap(controller, token: token, name: "node-r") }
            #expect(error?.message.contains("is not valid here") == true)
        }
    }

    /// A node certificate cannot act as an administrator, and a fenced incarnation cannot resume.
    @Test func nodeCertificateIsNotAdminAndStaleIncarnationIsFenced() async throws {
        try await TestController.with { controller in
            let identity = try controller.authority.issueIdentity(name: "node-x", role: .node, lifetime: 3600)
            let tls = try TLSContexts.mutualClient(identity: identity, ca: try controller.authority.certificate)
            let adminError = await #expect(throws: ElasticError.self) {
                _ = try await ControlClient.exchange(.statusRequest, with: controller.endpoint, tls: tls)
            }
            #expect(adminError?.message.contains("may not send") == true, "got: \(String(describing: adminError))")

            let before = try await controller.admin.status()
            let resume = ControlMessage.hello(Hello(resuming: Generation(42), capacity: Capacity(cores: 1, memoryBytes: 1, gflops: 1), softwareVersion: "x"))
            let fenced = await #expect(throws: ElasticError.self) {
                _ = try await ControlClient.exchange(resume, with: controller.endpoint, tls: tls)
            }
            #expect(fenced?.message.contains("join again as a new member") == true, "got: \(String(describing: fenced))")
            try await expectUnchanged(controller, since: before)
        }
    }

    /// Garbage on an authenticated connection closes that connection only.
    @Test func malformedFramesCloseTheConnectionNotTheController() async throws {
        try await TestController.with { controller in
            let identity = try controller.authority.issueIdentity(name: "node-g", role: .node, lifetime: 3600)
            let tls = try TLSContexts.mutualClient(identity: identity, ca: try controller.authority.certificate)
            let malformed: [Frame] = [
                Frame(kind: 250, generation: .zero, payload: []),
                Frame(kind: ControlMessage.Kind.hello.rawValue, generation: .zero, payload: [1, 2, 3]),
            ]
            for frame in malformed {
                let connection = try await FrameChannels.connect(host: controller.endpoint.host, port: controller.endpoint.port, tls: tls, expecting: .controller)
                let reply: ControlMessage? = try await connection.channel.executeThenClose { inbound, outbound in
                    try await outbound.write(frame)
                    for try await frame in inbound { return try ControlMessage(frame: frame) }
                    return nil
                }
                guard case .refused(let refused) = reply else {
                    Issue.record("expected a refusal, got \(String(describing: reply))")
                    continue
                }
                #expect(refused.code == .protocolError || refused.code == .notAuthorized)
            }
            #expect(try await controller.admin.status().members.isEmpty)
        }
    }
}

private func temporaryDirectory() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("elastic-worker-\(UUID().uuidString)")
}

private func bootstrap(_ controller: TestController, token: String, name: String) async throws {
    let directory = temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    _ = try await JoinBootstrap.run(controller: controller.endpoint, token: token, caHash: controller.caHash, name: name, paths: WorkerPaths(dataDirectory: directory))
}

/// A refused attempt leaves the generation and the member set as they were.
private func expectUnchanged(_ controller: TestController, since before: ClusterStatus, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let after = try await controller.admin.status()
    #expect(after.generation == before.generation, sourceLocation: sourceLocation)
    #expect(after.members.map(\.node) == before.members.map(\.node), sourceLocation: sourceLocation)
    #expect(after.members.map(\.state) == before.members.map(\.state), sourceLocation: sourceLocation)
}
