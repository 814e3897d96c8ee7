"""Job kinds: what each [job].kind brings (shards of ids, a sweep of trials, a pipeline of steps), behind one
protocol (base.JobKind), named in one place (registry.KINDS). A new kind is a module here and a line there."""
