// Widgets of every page: the error box, and a modal <dialog>: focus moves into it, Escape cancels, the answer goes to onClose.
import { useEffect, useRef, useState } from "preact/hooks";

// Asks for confirmation (no input) or for a value (input given as its label).
export function Ask({ title, text, input, confirm, danger, onClose }) {
  const ref = useRef(null);
  const [value, setValue] = useState("");
  useEffect(() => {
    const d = ref.current;
    const opener = document.activeElement; // focus goes back there when the dialog closes
    d.showModal();
    const cancel = (e) => {
      e.preventDefault();
      onClose(null);
    };
    d.addEventListener("cancel", cancel);
    return () => {
      d.removeEventListener("cancel", cancel);
      if (d.open) d.close(); // while modal, the rest of the page is inert and takes no focus
      if (opener && opener.isConnected) opener.focus();
    };
  }, []);
  function submit(e) {
    e.preventDefault();
    onClose(input ? value.trim() : true);
  }
  return (
    <dialog ref={ref} aria-labelledby="ask-title">
      <form onSubmit={submit}>
        <h2 id="ask-title">{title}</h2>
        {text && <p>{text}</p>}
        {input && (
          <p>
            <label for="ask-input">{input}</label>
            <input id="ask-input" required autofocus value={value} pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,63}"
                   title="1–64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
                   onInput={(e) => setValue(e.currentTarget.value)} />
          </p>
        )}
        <div class="buttons">
          <button type="button" onClick={() => onClose(null)}>Cancel</button>
          <button type="submit" class={danger ? "danger" : "primary"} autofocus={!input}>{confirm}</button>
        </div>
      </form>
    </dialog>
  );
}

// The error of the last failed call: status, code and message as the daemon sent them.
export function ErrorBox({ error, onClose }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      <strong>{error.what}: </strong>
      {error.status ? `${error.status} ${error.code}: ` : ""}
      {error.message}
      <button type="button" class="link" onClick={onClose} aria-label="Dismiss the error">Dismiss</button>
    </div>
  );
}

