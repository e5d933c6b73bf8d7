"""``runner-oci``: the runner's executor behind runc's command line, so that Docker, containerd, podman (conmon) and
any caller of an OCI runtime can run containers with it: a bundle's config.json read and checked
(:mod:`config`), its root built (:mod:`mounts`), its init made and held until ``start`` (:mod:`init`), its state
under the caller's ``--root`` (:mod:`state`), the verbs (:mod:`lifecycle`, :mod:`exec`, :mod:`verbs`,
:mod:`features`), the command line (:mod:`main`). It sits beside ``runner/cli`` and uses the executor's pieces
(the exec stage, the channel, the isolation mechanisms), never a container record of the runner's."""
