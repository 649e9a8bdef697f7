// The not-found page only needs the theme toggle.
import { initPage } from "./lib.js";

await initPage({ requireSession: false });
