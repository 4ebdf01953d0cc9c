// Widgets of every page: the error box, and a modal <dialog>: focus moves into it, Escape cancels, the answer goes to onClose.
import { useEffect, useRef, useState } from "preact/hooks";

// Focuses el, or the element now carrying its aria-label or id if el left the document.
function focusAgain(el) {
  if (!el || el === document.body) return;
  let target = el.isConnected ? el : null;
  const label = el.getAttribute("aria-label");
  if (!target && label) target = document.querySelector(`[aria-label="${CSS.escape(label)}"]`);
  if (!target && el.id) target = document.getElementById(el.id);
  if (target) target.focus();
}

// Asks for confirmation (no input) or for a value (input given as its label).
export function Ask({ title, text, input, confirm, danger, onClose }) {
  const ref = useRef(null);
  const [value, setValue] = useState("");
  // Focus goes back to the element that opened the dialog: noted at the first render (the
  // click's own turn, before any poll can re-render the page), and found again by its label
  // if a re-render replaced it meanwhile.
  const [opener] = useState(() => document.activeElement);
  useEffect(() => {
    const d = ref.current;
    d.showModal();
    const cancel = (e) => {
      e.preventDefault();
      onClose(null);
    };
    d.addEventListener("cancel", cancel);
    return () => {
      d.removeEventListener("cancel", cancel);
      if (d.open) d.close(); // while modal, the rest of the page is inert and takes no focus
      focusAgain(opener);
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

