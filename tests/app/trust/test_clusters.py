from app.trust.clusters import SessionInfo, address_clusters, cluster_of


def test_sessions_group_by_address_and_labels_reveal_nothing():
    sessions = [SessionInfo(1, "h-a", "ua1"), SessionInfo(2, "h-b", "ua1"), SessionInfo(3, "h-a", "ua2"),
                SessionInfo(4, None, "ua1"), SessionInfo(5, "h-a", "ua1"), SessionInfo(6, None, None)]
    clusters = address_clusters(sessions)
    assert [(c.label, c.sessions, c.user_agents) for c in clusters] == [
        ("A1", (1, 3, 5), 2), ("A2", (2,), 1), ("S1", (4,), 1), ("S2", (6,), 1)]
    assert all("h-" not in c.label for c in clusters)
    # sessions without an address are never merged, however alike they look
    assert cluster_of(clusters)[4] is not cluster_of(clusters)[6]
    assert address_clusters(reversed(sessions)) == clusters  # the same sessions, the same labels
