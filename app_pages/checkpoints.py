"""Checkpoints: list with metadata; load, unload, download, delete; upload, validated without running code."""

import streamlit as st

from qtl.models.checkpoint import CheckpointError
from qtl.models.store import delete_checkpoint, import_checkpoint
from ui import cache, checkpoint_dirs, session_models, tables

st.title("Checkpoints")
loaded = set(st.session_state["loaded"])
failed = st.session_state.pop("ckpt_delete_failed", None)  # (path, why): a delete the last run tried

for label, directory, writable in checkpoint_dirs.checkpoint_areas():
    infos, unreadable = cache.list_area(directory)
    st.subheader(f"{label}: `{directory}`")
    for path, why in unreadable:
        st.warning(f"`{path.name}` is not listed: {why}. Replace or delete the file.")
    if not infos:
        st.caption("No checkpoints here yet.")
        continue
    st.dataframe(tables.checkpoint_table(infos, loaded), hide_index=True, width="stretch")
    names = [i.path.name for i in infos]
    choice = st.selectbox("checkpoint", names, key=f"ckpt_pick_{label}", label_visibility="collapsed")
    info = infos[names.index(choice)]
    if info.stop_note:  # a cancelled or interrupted run's best epoch so far, kept: said, not hidden
        st.caption(f"`{choice}`: {info.stop_note}; it holds the best of those epochs and loads as any other.")
    path = str(info.path.resolve())
    cols = st.columns(4)
    if path in loaded:
        if cols[0].button("Unload", key=f"ckpt_unload_{label}", icon=":material/eject:"):
            session_models.unload(path)
            st.rerun()
    elif cols[0].button("Load", key=f"ckpt_load_{label}", type="primary", icon=":material/upload:"):
        try:
            session_models.load(path)
            st.rerun()
        except (CheckpointError, OSError, RuntimeError) as exc:
            st.error(f"Cannot load {choice}: {exc}")
    cols[1].download_button(
        "Download",
        data=info.path.read_bytes,
        file_name=choice,
        mime="application/octet-stream",
        key=f"ckpt_download_{label}",
        icon=":material/download:",
        on_click="ignore",
    )
    deletable = writable and checkpoint_dirs.can_modify(path)
    if st.session_state.get("ckpt_pending_delete") in {str(i.path.resolve()) for i in infos} - {path}:
        del st.session_state["ckpt_pending_delete"]  # another file picked here: ask again
    why = None  # why Delete is not offered
    if not checkpoint_dirs.can_modify(path):
        why = "Checkpoints on the server are read-only in the demo."
    elif not writable:  # a read-only mount or folder: deleting would fail
        why = f"`{directory}` is read-only here: its checkpoints cannot be deleted."
    if cols[2].button(
        "Delete",
        key=f"ckpt_delete_{label}",
        icon=":material/delete:",
        disabled=not deletable,
        help=why,
    ):
        st.session_state["ckpt_pending_delete"] = path  # asked first: the file may be a run's only copy
    if failed and failed[0] == path:  # said once, below its button
        st.error(failed[1])
    if deletable and st.session_state.get("ckpt_pending_delete") == path:
        st.warning(f"Delete `{choice}` from disk? This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Delete for good", key=f"ckpt_confirm_{label}", type="primary"):
            del st.session_state["ckpt_pending_delete"]
            try:  # first the file, then the model: a file that stays keeps its model loaded
                delete_checkpoint(path, [d for _, d, w in checkpoint_dirs.checkpoint_areas() if w])
            except OSError as exc:  # a read-only mount, a folder's permissions, a file gone meanwhile
                reason = exc.strerror or str(exc)
                st.session_state["ckpt_delete_failed"] = (path, f"Cannot delete `{choice}`: {reason}.")
            else:
                session_models.unload(path)
                st.toast(f"Deleted {choice}")
            st.rerun()
        if no.button("Keep it", key=f"ckpt_keep_{label}"):
            del st.session_state["ckpt_pending_delete"]
            st.rerun()

st.subheader("Upload a checkpoint")
target = checkpoint_dirs.session_dir()
st.caption(
    f"A `.pt` file saved by qtl. It is read with `torch.load(weights_only=True)`, so a malicious file cannot "
    f"run code; it is stored in `{target}` under a new name (never overwriting) and loaded."
)
files = st.file_uploader("checkpoint file", type=["pt"], accept_multiple_files=True, key="ckpt_upload")
done = st.session_state.setdefault("ckpt_imported", {})
listed = [d for _, d, _ in checkpoint_dirs.checkpoint_areas()]
for f in files or []:
    if f.file_id not in done:
        info = None
        try:  # under a name no listed checkpoint has, so that no loaded model hides another
            info = import_checkpoint(f.getvalue(), f.name, target, avoid=listed)
            session_models.load(info.path)
            done[f.file_id] = f"Stored and loaded {f.name} as `{info.path.name}` ({info.variant})."
            st.rerun()  # list it above
        except (CheckpointError, OSError, RuntimeError) as exc:
            if info is not None:  # stored, but it does not load here: a rejected upload leaves nothing
                info.path.unlink(missing_ok=True)
            done[f.file_id] = f"error: {f.name} was rejected: {exc}"
    message = done[f.file_id]
    if message.startswith("error: "):
        st.error(message.removeprefix("error: "))
    else:
        st.success(message)
