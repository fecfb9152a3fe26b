"""The cluster: replicated pool state (Raft via pysyncobj), the leader's planner, the agent
that reports local observations, and the control backend the gRPC API serves."""
